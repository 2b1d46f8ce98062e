;; Hostile fixture: imports a function outside the "aegis" module
;; (env.system).  The node must refuse to load it.
(module
  (import "env" "system" (func $system (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "rm -rf /\00")
  (func (export "aegis_start") (result i32)
    (drop (call $system (i32.const 16)))
    (i32.const 0)))
