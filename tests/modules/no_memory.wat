;; Hostile fixture: has a memory but does not export it, so the host cannot
;; exchange data with it.  The node must refuse to load it.
(module
  (memory 1)
  (func (export "aegis_alloc") (param $len i32) (result i32) (i32.const 1024))
  (func (export "aegis_event") (param i32 i32 i32 i32) (result i32)
    (i32.const 0)))
