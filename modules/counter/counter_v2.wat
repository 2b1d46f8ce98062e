;; counter 2.0.0 -- the hot-swap demo's second version (aegis-edge, WAT).
;;
;; Subscribes: sensor/#      Emits: count/total
;;
;; Same behaviour and same state as counter 1.0.0 (counter.wat): continues
;; from the count v1 persisted in state key "count", so after a swap
;; count/total still equals the number of events fed (none lost, none counted
;; twice).  What marks it as v2: aegis_start logs "counter v2 started" (info).
(module
  (import "aegis" "state_get" (func $state_get (param i32 i32 i32 i32) (result i32)))
  (import "aegis" "state_set" (func $state_set (param i32 i32 i32 i32) (result i32)))
  (import "aegis" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (import "aegis" "log" (func $log (param i32 i32 i32)))

  ;; 2 pages: constants below 1024, the event buffer at 1024 (topic 255 +
  ;; data 65536 bytes).
  (memory (export "memory") 2)
  (data (i32.const 16) "count")        ;; state key, 5 bytes
  (data (i32.const 32) "count/total")  ;; topic, 11 bytes
  (data (i32.const 96) "counter v2 started")  ;; log text, 18 bytes
  ;; 64: 8-byte state value; 80: CBOR output (at most 9 bytes)

  (global $EVBUF i32 (i32.const 1024))
  (global $EVCAP i32 (i32.const 65791))

  (func (export "aegis_start") (result i32)
    (call $log (i32.const 1) (i32.const 96) (i32.const 18))
    (i32.const 0))

  (func (export "aegis_alloc") (param $len i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $len) (global.get $EVCAP))
      (then (i32.const 0))
      (else (global.get $EVBUF))))

  ;; CBOR uint head for $v at $p (shortest form); returns the length.
  (func $cbor_uint (param $p i32) (param $v i64) (result i32)
    (local $n i32) (local $i i32)
    (if (i64.lt_u (local.get $v) (i64.const 24))
      (then
        (i64.store8 (local.get $p) (local.get $v))
        (return (i32.const 1))))
    (if (i64.le_u (local.get $v) (i64.const 0xff))
      (then (i32.store8 (local.get $p) (i32.const 0x18)) (local.set $n (i32.const 1)))
      (else (if (i64.le_u (local.get $v) (i64.const 0xffff))
        (then (i32.store8 (local.get $p) (i32.const 0x19)) (local.set $n (i32.const 2)))
        (else (if (i64.le_u (local.get $v) (i64.const 0xffffffff))
          (then (i32.store8 (local.get $p) (i32.const 0x1a)) (local.set $n (i32.const 4)))
          (else (i32.store8 (local.get $p) (i32.const 0x1b)) (local.set $n (i32.const 8))))))))
    ;; big-endian payload
    (local.set $i (i32.const 0))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (i64.store8
          (i32.add (local.get $p) (i32.add (i32.const 1) (local.get $i)))
          (i64.shr_u (local.get $v)
            (i64.extend_i32_u
              (i32.mul (i32.const 8)
                (i32.sub (i32.sub (local.get $n) (i32.const 1)) (local.get $i))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.add (local.get $n) (i32.const 1)))

  (func (export "aegis_event") (param i32 i32 i32 i32) (result i32)
    (local $r i32) (local $count i64)
    (local.set $r (call $state_get (i32.const 16) (i32.const 5) (i32.const 64) (i32.const 8)))
    (if (i32.eq (local.get $r) (i32.const 8))
      (then (local.set $count (i64.load (i32.const 64))))
      (else
        ;; absent: start at 0; any other length is corrupt state
        (if (i32.ne (local.get $r) (i32.const -1))
          (then (return (i32.const -3))))))
    (local.set $count (i64.add (local.get $count) (i64.const 1)))
    (i64.store (i32.const 64) (local.get $count))
    (local.set $r (call $state_set (i32.const 16) (i32.const 5) (i32.const 64) (i32.const 8)))
    (if (i32.ne (local.get $r) (i32.const 0))
      (then (return (local.get $r))))
    (call $emit (i32.const 32) (i32.const 11)
                (i32.const 80) (call $cbor_uint (i32.const 80) (local.get $count))))
)
