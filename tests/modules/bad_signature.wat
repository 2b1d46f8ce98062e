;; Hostile fixture: imports aegis.emit with the wrong signature
;; (i32, i32) -> i32 instead of (i32, i32, i32, i32) -> i32.  The node must
;; refuse to load it.
(module
  (import "aegis" "emit" (func $emit (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "echo/x")
  (func (export "aegis_start") (result i32)
    (call $emit (i32.const 16) (i32.const 6))))
