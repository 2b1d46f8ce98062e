;; Edge fixture: aegis_event returns -3 (non-zero) for every event: a handler
;; error the node counts, not a trap (no rollback).
(module
  (memory (export "memory") 2)
  (func (export "aegis_alloc") (param $len i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $len) (i32.const 65791))
      (then (i32.const 0)) (else (i32.const 1024))))
  (func (export "aegis_event") (param i32 i32 i32 i32) (result i32)
    (i32.const -3)))
