;; Hostile fixture: declares 1000 pages (62.5 MiB) of initial memory, more
;; than any default limit: refused at install.
(module
  (memory (export "memory") 1000)
  (func (export "aegis_alloc") (param $len i32) (result i32) (i32.const 1024))
  (func (export "aegis_event") (param i32 i32 i32 i32) (result i32) (i32.const 0)))
