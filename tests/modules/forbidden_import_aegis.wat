;; Hostile fixture: imports a name from module "aegis" that ABI v1 does not
;; define (aegis.exec).  The node must refuse to load it.
(module
  (import "aegis" "exec" (func $exec (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "/bin/sh")
  (func (export "aegis_start") (result i32)
    (call $exec (i32.const 16) (i32.const 7))))
