;; Hostile fixture: a memory bomb.  aegis_event grows memory one page at a
;; time until memory.grow fails, then emits how many pages it got (i32 LE on
;; "bomb/pages") and returns.  With the node's memory cap the grow fails at
;; limits.memory_pages, so the bomb costs nothing beyond the limit.
(module
  (import "aegis" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "bomb/pages")
  (func (export "aegis_alloc") (param $len i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $len) (i32.const 65791))
      (then (i32.const 0)) (else (i32.const 1024))))
  (func (export "aegis_event") (param i32 i32 i32 i32) (result i32)
    (block $done
      (loop $more
        (br_if $done (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
        (br $more)))
    (i32.store (i32.const 32) (memory.size))
    (drop (call $emit (i32.const 16) (i32.const 10) (i32.const 32) (i32.const 4)))
    (i32.const 0)))
