;; WAT edge cases for the metering pass.
(module
  (type $bin (func (param i32 i32) (result i32)))
  (table 3 funcref)
  (elem (i32.const 0) $add $sub $mul)
  (memory (export "memory") 1 4)
  (func $add (type $bin) (i32.add (local.get 0) (local.get 1)))
  (func $sub (type $bin) (i32.sub (local.get 0) (local.get 1)))
  (func $mul (type $bin) (i32.mul (local.get 0) (local.get 1)))

  ;; nested loops with br_if back to each loop: sum_{i<n} sum_{j<i} (i^j)
  (func (export "nested") (param $n i32) (result i32)
    (local $i i32) (local $j i32) (local $s i32)
    (loop $outer
      (local.set $j (i32.const 0))
      (block $done
        (loop $inner
          (br_if $done (i32.ge_u (local.get $j) (local.get $i)))
          (local.set $s (i32.add (local.get $s) (i32.xor (local.get $i) (local.get $j))))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br $inner)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $outer (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $s))

  ;; a loop with params and results (multi-value): counts down n carrying an
  ;; accumulator on the operand stack.
  (func (export "loop_params") (param $n i32) (result i32)
    (i32.const 0) (local.get $n)
    (loop $l (param i32 i32) (result i32 i32)
      ;; stack: acc k
      (local.set $n)
      (i32.add (local.get $n))          ;; acc + k
      (local.get $n)
      (i32.sub (i32.const 1))           ;; k - 1
      (local.tee $n)
      (br_if $l (i32.gt_s (local.get $n) (i32.const 0)))
      )
    (drop))

  ;; a block returning two values through a branch
  (func (export "multi_block") (param i32) (result i32)
    (block $b (result i32 i32)
      (i32.const 7) (i32.const 5)
      (br_if $b (local.get 0))
      (drop) (drop) (i32.const 1) (i32.const 2))
    (i32.sub))

  ;; return from inside nested loops
  (func (export "find") (param $target i32) (result i32)
    (local $i i32) (local $j i32)
    (loop $a
      (local.set $j (i32.const 0))
      (loop $b
        (if (i32.eq (i32.mul (local.get $i) (local.get $j)) (local.get $target))
          (then (return (i32.add (i32.mul (local.get $i) (i32.const 1000)) (local.get $j)))))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br_if $b (i32.lt_u (local.get $j) (i32.const 100))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $a (i32.lt_u (local.get $i) (i32.const 100))))
    (i32.const -1))

  ;; unreachable: traps when x is odd, after some code in the same block
  (func (export "trap_odd") (param $x i32) (result i32)
    (if (i32.and (local.get $x) (i32.const 1)) (then (unreachable)))
    (i32.mul (local.get $x) (i32.const 3)))

  ;; call_indirect through the table
  (func (export "apply") (param $f i32) (param $a i32) (param $b i32) (result i32)
    (call_indirect (type $bin) (local.get $a) (local.get $b) (local.get $f)))

  ;; if/else with results, else-if chains
  (func (export "sign") (param $x i32) (result i32)
    (if (result i32) (i32.lt_s (local.get $x) (i32.const 0))
      (then (i32.const -1))
      (else (if (result i32) (i32.eqz (local.get $x))
        (then (i32.const 0)) (else (i32.const 1))))))

  ;; br_table inside a loop
  (func (export "table_loop") (param $n i32) (result i32)
    (local $s i32)
    (loop $l
      (block $c2 (block $c1 (block $c0
        (br_table $c0 $c1 $c2 (i32.rem_u (local.get $n) (i32.const 3))))
        (local.set $s (i32.add (local.get $s) (i32.const 1))) (br $c2))
        (local.set $s (i32.mul (local.get $s) (i32.const 2))))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $l (i32.gt_s (local.get $n) (i32.const 0))))
    (local.get $s))

  ;; deep recursion: depth(n) = n, one frame per level
  (func $depth (export "depth") (param $n i32) (result i32)
    (if (result i32) (i32.eqz (local.get $n))
      (then (i32.const 0))
      (else (i32.add (i32.const 1) (call $depth (i32.sub (local.get $n) (i32.const 1)))))))

  ;; memory.grow and memory.size
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "pages") (result i32) (memory.size))

  ;; sign-extension and saturating truncation ops pass through
  (func (export "ext") (param i32) (result i32)
    (i32.add (i32.extend8_s (local.get 0)) (i32.trunc_sat_f64_s (f64.const 1e30))))

  ;; never returns
  (func (export "spin") (loop (br 0)))
  (func (export "spin_call") (loop (drop (call $add (i32.const 1) (i32.const 2))) (br 0)))
)
