;; State fixture: for each event reads state key "n" (8-byte little-endian
;; u64, absent = 0), increments it, stores it and emits "state/n" with the
;; raw 8-byte value (not CBOR).  Returns the first non-zero error.
(module
  (import "aegis" "state_get" (func $state_get (param i32 i32 i32 i32) (result i32)))
  (import "aegis" "state_set" (func $state_set (param i32 i32 i32 i32) (result i32)))
  (import "aegis" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "n")
  (data (i32.const 32) "state/n")
  ;; 64: the 8-byte value
  (func (export "aegis_alloc") (param $len i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $len) (i32.const 65791))
      (then (i32.const 0)) (else (i32.const 1024))))
  (func (export "aegis_event") (param i32 i32 i32 i32) (result i32)
    (local $r i32)
    (local.set $r (call $state_get (i32.const 16) (i32.const 1) (i32.const 64) (i32.const 8)))
    (if (i32.ne (local.get $r) (i32.const 8))
      (then
        (if (i32.ne (local.get $r) (i32.const -1)) (then (return (i32.const -3))))
        (i64.store (i32.const 64) (i64.const 0))))
    (i64.store (i32.const 64) (i64.add (i64.load (i32.const 64)) (i64.const 1)))
    (local.set $r (call $state_set (i32.const 16) (i32.const 1) (i32.const 64) (i32.const 8)))
    (if (i32.ne (local.get $r) (i32.const 0)) (then (return (local.get $r))))
    (call $emit (i32.const 32) (i32.const 7) (i32.const 64) (i32.const 8))))
