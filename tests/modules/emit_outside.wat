;; Hostile fixture: on every event emits topic "secret/x" (outside any
;; sensible emit grant) with empty data and returns the emit result, so a
;; denied emit shows up as a handler error (AEGIS_EPERM = -2).
(module
  (import "aegis" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "secret/x")
  (func (export "aegis_alloc") (param $len i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $len) (i32.const 65791))
      (then (i32.const 0)) (else (i32.const 1024))))
  (func (export "aegis_event") (param i32 i32 i32 i32) (result i32)
    (call $emit (i32.const 16) (i32.const 8) (i32.const 0) (i32.const 0))))
