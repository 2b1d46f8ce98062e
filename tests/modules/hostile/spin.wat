;; Hostile fixture: aegis_event never returns, `(loop (br 0))`.  Metered, it
;; runs out of fuel (a trap) within one budget; the node must keep answering
;; and roll the module back after its trap policy's count.
(module
  (memory (export "memory") 2)
  (func (export "aegis_alloc") (param $len i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $len) (i32.const 65791))
      (then (i32.const 0)) (else (i32.const 1024))))
  (func (export "aegis_event") (param i32 i32 i32 i32) (result i32)
    (loop (br 0))
    (i32.const 0)))
