;; Hostile fixture: aegis_start never returns.  The install must be refused
;; (out of fuel in aegis_start) within one budget, the old version kept.
(module
  (memory (export "memory") 2)
  (func (export "aegis_start") (result i32)
    (loop (br 0))
    (i32.const 0))
  (func (export "aegis_alloc") (param $len i32) (result i32) (i32.const 1024))
  (func (export "aegis_event") (param i32 i32 i32 i32) (result i32) (i32.const 0)))
