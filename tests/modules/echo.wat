;; Benchmark / plumbing fixture: for each event emits "echo/" + the original
;; topic with the same data, and returns the emit result.  No state, no
;; copies: aegis_alloc hands out a buffer placed right after a constant
;; "echo/", so the host writes the topic exactly where the new topic needs it.
;; (An original topic longer than 250 bytes gives a 256+ byte echo topic,
;; which the host refuses with AEGIS_EINVAL.)
(module
  (import "aegis" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1019) "echo/")   ;; 1019..1023, buffer starts at 1024
  (func (export "aegis_alloc") (param $len i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $len) (i32.const 65791))
      (then (i32.const 0)) (else (i32.const 1024))))
  (func (export "aegis_event") (param $tp i32) (param $tl i32) (param $dp i32) (param $dl i32) (result i32)
    (call $emit
      (i32.sub (local.get $tp) (i32.const 5))
      (i32.add (local.get $tl) (i32.const 5))
      (local.get $dp) (local.get $dl))))
