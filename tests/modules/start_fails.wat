;; Hostile fixture: aegis_start returns 1, so the node must refuse to start
;; this version (keeping / rolling back to the previous one).  Its event
;; handler would accept everything.
(module
  (memory (export "memory") 2)
  (func (export "aegis_start") (result i32) (i32.const 1))
  (func (export "aegis_alloc") (param $len i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $len) (i32.const 65791))
      (then (i32.const 0)) (else (i32.const 1024))))
  (func (export "aegis_event") (param i32 i32 i32 i32) (result i32)
    (i32.const 0)))
