;; Edge fixture: aegis_alloc always returns 0 (cannot allocate), so every
;; event must be dropped for this module (and counted); aegis_event, which
;; would trap, must never be called.
(module
  (memory (export "memory") 1)
  (func (export "aegis_alloc") (param $len i32) (result i32) (i32.const 0))
  (func (export "aegis_event") (param i32 i32 i32 i32) (result i32)
    unreachable))
