;; A loop that calls a host function forever: host calls cross into Python
;; and are the slowest thing per unit of fuel (OP_CALL_HOST prices them).
(module
  (import "aegis" "now_ms" (func $now (result i64)))
  (memory (export "memory") 1)
  (func (export "spin_host") (loop (drop (call $now)) (br 0)))
  (func (export "calls") (param $n i32) (result i64)
    (local $s i64)
    (loop $l
      (local.set $s (i64.add (local.get $s) (call $now)))
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
    (local.get $s)))
