;; Hostile fixture: aegis_event spins forever calling a host function, chosen
;; by the first byte of the event data: 0 emit (1 KiB, result ignored, so it
;; goes on when the queue is full), 1 state_set (1 KiB), 2 state_get,
;; 3 log (1 KiB), 4 now_ms.  Metering must price host calls so that each
;; spin is stopped within about one budget's time too.
(module
  (import "aegis" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (import "aegis" "state_set" (func $set (param i32 i32 i32 i32) (result i32)))
  (import "aegis" "state_get" (func $get (param i32 i32 i32 i32) (result i32)))
  (import "aegis" "log" (func $log (param i32 i32 i32)))
  (import "aegis" "now_ms" (func $now (result i64)))
  (memory (export "memory") 2)
  (data (i32.const 16) "spin/x")
  (func (export "aegis_alloc") (param $len i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $len) (i32.const 65791))
      (then (i32.const 0)) (else (i32.const 8192))))
  (func (export "aegis_event") (param $tp i32) (param $tl i32) (param $dp i32) (param $dl i32) (result i32)
    (local $k i32)
    (local.set $k (if (result i32) (local.get $dl)
      (then (i32.load8_u (local.get $dp))) (else (i32.const 0))))
    ;; one loop per host function: each loop body is its own charge region
    (if (i32.eq (local.get $k) (i32.const 0)) (then (loop $l0
      (drop (call $emit (i32.const 16) (i32.const 6) (i32.const 1024) (i32.const 1024)))
      (br $l0))))
    (if (i32.eq (local.get $k) (i32.const 1)) (then (loop $l1
      (drop (call $set (i32.const 16) (i32.const 6) (i32.const 1024) (i32.const 1024)))
      (br $l1))))
    (if (i32.eq (local.get $k) (i32.const 2)) (then (loop $l2
      (drop (call $get (i32.const 16) (i32.const 6) (i32.const 1024) (i32.const 4096)))
      (br $l2))))
    (if (i32.eq (local.get $k) (i32.const 3)) (then (loop $l3
      (call $log (i32.const 1) (i32.const 1024) (i32.const 1024))
      (br $l3))))
    (loop $l4
      (drop (call $now))
      (br $l4))
    (i32.const 0)))
