;; Hostile fixture: huge outputs.  On every event: one emit of 70000 bytes
;; (over data_max: AEGIS_E2BIG), a 1 MiB log line (truncated by the host),
;; then 3000 emits of 1 KiB on "flood/x" (3 MB of output per event, within
;; the default fuel: each emit costs 2000), stopping early if the host says
;; AEGIS_ELIMIT (queue full); returns the number that were accepted.
(module
  (import "aegis" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (import "aegis" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "flood/x")
  (func (export "aegis_alloc") (param $len i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $len) (i32.const 65791))
      (then (i32.const 0)) (else (i32.const 1024))))
  (func (export "aegis_event") (param i32 i32 i32 i32) (result i32)
    (local $n i32) (local $r i32)
    (drop (call $emit (i32.const 16) (i32.const 7) (i32.const 4096) (i32.const 70000)))
    (call $log (i32.const 1) (i32.const 4096) (i32.const 1048576))
    (block $done
      (loop $more
        (local.set $r (call $emit (i32.const 16) (i32.const 7) (i32.const 4096) (i32.const 1024)))
        (br_if $done (i32.ne (local.get $r) (i32.const 0)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br_if $more (i32.lt_u (local.get $n) (i32.const 3000)))))
    (local.get $n)))
