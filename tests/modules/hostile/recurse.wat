;; Hostile fixture: unbounded recursion in aegis_event.  Stopped by wasm3's
;; stack limit (or fuel), a trap either way.
(module
  (memory (export "memory") 2)
  (func $down (param $n i32) (result i32)
    (i32.add (call $down (i32.add (local.get $n) (i32.const 1))) (i32.const 1)))
  (func (export "aegis_alloc") (param $len i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $len) (i32.const 65791))
      (then (i32.const 0)) (else (i32.const 1024))))
  (func (export "aegis_event") (param i32 i32 i32 i32) (result i32)
    (call $down (i32.const 0))))
