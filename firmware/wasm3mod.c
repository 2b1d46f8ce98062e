// wasm3 as a MicroPython native module: the C side of node/board/native_engine.py.
//
//   rt = wasm3.load(wasm, stack_bytes, mem_limit)  parse + load; RuntimeError if refused
//   wasm3.link(rt, module, name, sig, fn)           import module.name -> Python callable
//   f = wasm3.find(rt, name)                        an export, or None
//   f(*args)                                        call; RuntimeError('[trap] ...') on a trap
//   wasm3.memory(rt)                                bytearray over linear memory (or None)
//   wasm3.set_gas(rt, fuel); wasm3.gas_used(rt)     metering.usegas budget, as in pywasm3
//
// Behaviour copies pywasm3 0.5.0 (m3module.c) where it has one, so the same
// modules give the same results and messages on boards and gateways.
//
// Memory: every wasm3 allocation comes from the GC heap (natlibc.c) and is
// reachable from the Runtime object through block-head pointers: env,
// runtime and module structs, the private copy of the wasm bytes (wasm3
// keeps pointers into them), the import links.  MicroPython's GC follows
// only head pointers, so nothing may be kept through an interior pointer alone.
//
// The same file builds into firmware as a user C module (firmware/usermod/,
// MICROPY_ENABLE_DYNRUNTIME unset): the few calls that differ go through
// the W3_* macros below, and the types and module are static objects.
#if MICROPY_ENABLE_DYNRUNTIME
#include "py/dynruntime.h"
#define W3_NLR_PUSH(b) mp_fun_table.nlr_push(b)
#define W3_NLR_POP() mp_fun_table.nlr_pop()
#define W3_NEW_FLOAT(d) mp_fun_table.obj_new_float_from_d(d)
#define W3_GET_FLOAT(o) mp_fun_table.obj_get_float_to_d(o)
#define W3_RAISE_MEMORY(msg) mp_fun_table.raise_msg(mp_fun_table.load_global(MP_QSTR_MemoryError), msg)
#define W3_TYPE(t) ((const mp_obj_type_t *)&(t))
#else
#include "py/runtime.h"
#include "py/objtuple.h"
#define W3_NLR_PUSH(b) nlr_push(b)
#define W3_NLR_POP() nlr_pop()
#if MICROPY_PY_BUILTINS_FLOAT
#define W3_NEW_FLOAT(d) mp_obj_new_float((mp_float_t)(d))
#define W3_GET_FLOAT(o) ((double)mp_obj_get_float(o))
#else
#define W3_NEW_FLOAT(d) (mp_raise_TypeError(MP_ERROR_TEXT("no floats in this firmware")), mp_const_none)
#define W3_GET_FLOAT(o) (mp_raise_TypeError(MP_ERROR_TEXT("no floats in this firmware")), 0.0)
#endif
#define W3_RAISE_MEMORY(msg) mp_raise_msg(&mp_type_MemoryError, MP_ERROR_TEXT(msg))
#define W3_TYPE(t) (&(t))
#define mp_obj_new_exception_arg1_dyn mp_obj_new_exception_arg1
#endif
#include "wasm3.h"
#include "m3_env.h"

#define MAX_ARGS 16

#if MICROPY_ENABLE_DYNRUNTIME
// firmware/mpylink resolves &mp_type_type etc. in static data to these
// mp_fun_table entries (FUN_TABLE_FIRST = 73): fail the build if the
// MicroPython headers built with disagree.
_Static_assert(offsetof(mp_fun_table_t, type_type) == 73 * sizeof(void *),
    "mp_fun_table moved: update FUN_TABLE_FIRST in firmware/mpylink/link.py");
_Static_assert(offsetof(mp_fun_table_t, type_fun_builtin_var) == 81 * sizeof(void *),
    "mp_fun_table moved: update FUN_TABLE_OBJS in firmware/mpylink/link.py");
_Static_assert(offsetof(mp_fun_table_t, stream_write_obj) == 86 * sizeof(void *),
    "mp_fun_table moved: update FUN_TABLE_OBJS in firmware/mpylink/link.py");
#endif

typedef struct _rt_obj_t {
    mp_obj_base_t base;
    IM3Environment env;
    IM3Runtime rt;
    IM3Module mod;
    uint8_t *wasm;          // our copy: wasm3 points into it for names and code
    mp_obj_t links;         // list of link_t blocks, so none is ever collected
    mp_obj_t pending;       // exception raised by a host function, re-raised after the call
    int64_t gas_total;
    int64_t gas_left;
} rt_obj_t;

typedef struct _func_obj_t {
    mp_obj_base_t base;
    rt_obj_t *rt;
    IM3Function f;
} func_obj_t;

typedef struct _link_t {
    mp_obj_base_t base;     // a real object, so it can live in rt->links
    rt_obj_t *rt;
    mp_obj_t fn;
} link_t;

static mp_obj_t func_call(mp_obj_t self_in, size_t n_args, size_t n_kw, const mp_obj_t *args);

#if MICROPY_ENABLE_DYNRUNTIME
// Types live in bss, filled in by mpy_init.  Non-static: a natmod reaches
// bss only through the GOT (bss is allocated apart from the code).
mp_obj_full_type_t wasm3_runtime_type;
mp_obj_full_type_t wasm3_function_type;
mp_obj_full_type_t wasm3_link_type;
#else
static MP_DEFINE_CONST_OBJ_TYPE(wasm3_runtime_type, MP_QSTR_Runtime, MP_TYPE_FLAG_NONE);
static MP_DEFINE_CONST_OBJ_TYPE(wasm3_link_type, MP_QSTR_Link, MP_TYPE_FLAG_NONE);
static MP_DEFINE_CONST_OBJ_TYPE(wasm3_function_type, MP_QSTR_Function, MP_TYPE_FLAG_NONE,
    call, func_call);
#endif

// pywasm3's marker for "a host function raised": the Python exception wins.
static const char trap_exception[] = "function raised exception";

// nlr_buf_t has the firmware's layout; pad it in case the firmware's nlr
// flavour keeps more registers than the one this header was configured for.
typedef struct { nlr_buf_t nlr; void *pad[32]; } nlr_pad_t;

MP_NORETURN static void raise_runtime(const char *err, const char *detail) {
    // The message is copied into a str: a C string on the stack would dangle.
    char buf[200];
    size_t n = 0;
    const char *parts[4] = { err, detail ? " (" : NULL, detail, detail ? ")" : NULL };
    for (int i = 0; i < 4; i++) {
        for (const char *p = parts[i]; p && *p && n < sizeof(buf); p++) {
            buf[n++] = *p;
        }
    }
    mp_obj_t exc = mp_obj_new_exception_arg1_dyn(&mp_type_RuntimeError, mp_obj_new_str(buf, n));
    nlr_raise(exc);
}

// pywasm3's formatError: "<result> (<error info message>)" when there is one.
MP_NORETURN static void raise_m3(IM3Runtime rt, M3Result err) {
    M3ErrorInfo info;
    memset(&info, 0, sizeof(info));
    if (rt) {
        m3_GetErrorInfo(rt, &info);
    }
    raise_runtime(err, (info.message && info.message[0]) ? info.message : NULL);
}

MP_NORETURN static void raise_memory(const char *msg) {
    W3_RAISE_MEMORY(msg);
}

static rt_obj_t *get_rt(mp_obj_t o) {
    if (mp_obj_get_type(o) != W3_TYPE(wasm3_runtime_type)) {
        mp_raise_TypeError("expected a wasm3 runtime");
    }
    return MP_OBJ_TO_PTR(o);
}

/* ---- values: wasm slots <-> Python objects ---- */

static mp_obj_t new_i64(int64_t v) {
    if (sizeof(mp_int_t) == 8 || (v >= -0x40000000LL && v < 0x40000000LL)) {
        return mp_obj_new_int((mp_int_t)v);
    }
    // 32-bit ports: hi << 32 | lo with the firmware's long ints.
    mp_obj_t hi = mp_obj_new_int((mp_int_t)(int32_t)(v >> 32));
    mp_obj_t lo = mp_obj_new_int_from_uint((mp_uint_t)(uint32_t)v);
    hi = mp_binary_op(MP_BINARY_OP_LSHIFT, hi, MP_OBJ_NEW_SMALL_INT(32));
    return mp_binary_op(MP_BINARY_OP_OR, hi, lo);
}

static int64_t get_i64(mp_obj_t o) {
    if (sizeof(mp_int_t) == 8 || mp_obj_is_small_int(o)) {
        return (int64_t)mp_obj_get_int(o);
    }
    mp_obj_t lo = mp_binary_op(MP_BINARY_OP_AND, o, mp_obj_new_int_from_uint(0xffffffffu));
    mp_obj_t hi = mp_binary_op(MP_BINARY_OP_RSHIFT, o, MP_OBJ_NEW_SMALL_INT(32));
    uint32_t l = (uint32_t)mp_obj_get_int_truncated(lo);
    int32_t h = (int32_t)mp_obj_get_int_truncated(hi);
    return (int64_t)(((uint64_t)(uint32_t)h << 32) | l);
}

static mp_obj_t from_slot(const void *s, M3ValueType t) {
    switch (t) {
        case c_m3Type_i32: return mp_obj_new_int(*(const int32_t *)s);
        case c_m3Type_i64: return new_i64(*(const int64_t *)s);
        case c_m3Type_f32: return W3_NEW_FLOAT(*(const float *)s);
        case c_m3Type_f64: return W3_NEW_FLOAT(*(const double *)s);
        default: mp_raise_TypeError("unknown wasm type");
    }
}

static void to_slot(void *s, M3ValueType t, mp_obj_t o) {
    switch (t) {
        case c_m3Type_i32: *(int32_t *)s = (int32_t)mp_obj_get_int_truncated(o); break;
        case c_m3Type_i64: *(int64_t *)s = get_i64(o); break;
        case c_m3Type_f32: *(float *)s = (float)W3_GET_FLOAT(o); break;
        case c_m3Type_f64: *(double *)s = W3_GET_FLOAT(o); break;
        default: mp_raise_TypeError("unknown wasm type");
    }
}

/* ---- host functions ---- */

// Converts arguments, calls the Python function, stores the result.  Runs
// under nlr so a Python exception never unwinds through wasm3's frames.
static void host_call_inner(link_t *l, IM3Function f, uint64_t *sp, const char **trap) {
    uint32_t na = m3_GetArgCount(f), nr = m3_GetRetCount(f);
    mp_obj_t args[MAX_ARGS];
    if (na > MAX_ARGS || nr > 1) {
        *trap = "python call: too many args or results";
        return;
    }
    for (uint32_t i = 0; i < na; i++) {
        args[i] = from_slot(&sp[i + nr], m3_GetArgType(f, i));
    }
    mp_obj_t r = mp_call_function_n_kw(l->fn, na, 0, args);
    if (nr == 1) {
        if (r == mp_const_none) {
            *trap = "python call: should return a value";
            return;
        }
        to_slot(&sp[0], m3_GetRetType(f, 0), r);
    }
}

static m3ApiRawFunction(host_call) {
    link_t *l = (link_t *)_ctx->userdata;
    const char *volatile trap = NULL;
    nlr_pad_t nb;
    if (W3_NLR_PUSH(&nb.nlr) == 0) {
        host_call_inner(l, _ctx->function, _sp, (const char **)&trap);
        W3_NLR_POP();
    } else {
        l->rt->pending = MP_OBJ_FROM_PTR(nb.nlr.ret_val);
        return trap_exception;
    }
    return trap;
}

// metering.usegas(i32): exactly pywasm3's metering_usegas.
static m3ApiRawFunction(metering_usegas) {
    rt_obj_t *rt = (rt_obj_t *)_ctx->userdata;
    rt->gas_left -= *(int32_t *)&_sp[0];
    if (rt->gas_left < 0) {
        return "[trap] Out of gas";
    }
    return m3Err_none;
}

/* ---- module functions ---- */

static mp_obj_t w_load(mp_obj_t wasm_in, mp_obj_t stack_in, mp_obj_t limit_in) {
    mp_buffer_info_t bi;
    mp_get_buffer_raise(wasm_in, &bi, MP_BUFFER_READ);
    mp_int_t stack = mp_obj_get_int(stack_in), limit = mp_obj_get_int(limit_in);
    if (stack < 1024 || limit < 0) {
        mp_raise_ValueError("stack must be >= 1024, memory limit >= 0");
    }
    rt_obj_t *o = mp_obj_malloc(rt_obj_t, W3_TYPE(wasm3_runtime_type));
    o->links = mp_obj_new_list(0, NULL);
    o->pending = MP_OBJ_NULL;
    o->wasm = m_malloc(bi.len ? bi.len : 1);
    memcpy(o->wasm, bi.buf, bi.len);
    o->env = m3_NewEnvironment();
    if (!o->env) {
        raise_memory("wasm3: no memory for an environment");
    }
    o->rt = m3_NewRuntime(o->env, (uint32_t)stack, NULL);
    if (!o->rt) {
        raise_memory("wasm3: no memory for the stack");
    }
    o->rt->memoryLimit = (uint32_t)limit;
    IM3Module mod = NULL;
    M3Result err = m3_ParseModule(o->env, &mod, o->wasm, (uint32_t)bi.len);
    if (err) {
        raise_runtime(err, NULL);   // pywasm3 gives parse errors without info
    }
    err = m3_LoadModule(o->rt, mod);
    if (err) {
        raise_m3(o->rt, err);
    }
    o->mod = mod;
    err = m3_LinkRawFunctionEx(mod, "metering", "usegas", "v(i)", &metering_usegas, o);
    if (err && err != m3Err_functionLookupFailed) {
        raise_m3(o->rt, err);
    }
    return MP_OBJ_FROM_PTR(o);
}
static MP_DEFINE_CONST_FUN_OBJ_3(w_load_obj, w_load);

static mp_obj_t w_link(size_t n_args, const mp_obj_t *args) {
    rt_obj_t *rt = get_rt(args[0]);
    link_t *l = mp_obj_malloc(link_t, W3_TYPE(wasm3_link_type));
    l->rt = rt;
    l->fn = args[4];
    mp_obj_list_append(rt->links, MP_OBJ_FROM_PTR(l));
    M3Result err = m3_LinkRawFunctionEx(rt->mod, mp_obj_str_get_str(args[1]),
        mp_obj_str_get_str(args[2]), mp_obj_str_get_str(args[3]), &host_call, l);
    if (err) {
        raise_m3(rt->rt, err);
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(w_link_obj, 5, 5, w_link);

static mp_obj_t w_find(mp_obj_t rt_in, mp_obj_t name) {
    rt_obj_t *rt = get_rt(rt_in);
    IM3Function f = NULL;
    if (m3_FindFunction(&f, rt->rt, mp_obj_str_get_str(name)) || !f) {
        return mp_const_none;
    }
    func_obj_t *o = mp_obj_malloc(func_obj_t, W3_TYPE(wasm3_function_type));
    o->rt = rt;
    o->f = f;
    return MP_OBJ_FROM_PTR(o);
}
static MP_DEFINE_CONST_FUN_OBJ_2(w_find_obj, w_find);

static mp_obj_t w_memory(mp_obj_t rt_in) {
    rt_obj_t *rt = get_rt(rt_in);
    uint32_t size = 0;
    uint8_t *mem = m3_GetMemory(rt->rt, &size, 0);
    if (!mem) {
        return mp_const_none;
    }
    return mp_obj_new_bytearray_by_ref(size, mem);
}
static MP_DEFINE_CONST_FUN_OBJ_1(w_memory_obj, w_memory);

static mp_obj_t w_set_gas(mp_obj_t rt_in, mp_obj_t fuel) {
    rt_obj_t *rt = get_rt(rt_in);
    rt->gas_total = rt->gas_left = get_i64(fuel);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(w_set_gas_obj, w_set_gas);

static mp_obj_t w_gas_used(mp_obj_t rt_in) {
    rt_obj_t *rt = get_rt(rt_in);
    return new_i64(rt->gas_total - rt->gas_left);
}
static MP_DEFINE_CONST_FUN_OBJ_1(w_gas_used_obj, w_gas_used);

// Function.__call__: pywasm3's M3_Function_call + get_result_from_stack.
static mp_obj_t func_call(mp_obj_t self_in, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    func_obj_t *self = MP_OBJ_TO_PTR(self_in);
    IM3Function f = self->f;
    uint32_t na = m3_GetArgCount(f);
    if (n_kw || n_args != na || na > MAX_ARGS) {
        mp_raise_TypeError("wrong number of arguments for a wasm function");
    }
    uint64_t vals[MAX_ARGS];
    const void *ptrs[MAX_ARGS];
    for (uint32_t i = 0; i < na; i++) {
        vals[i] = 0;
        ptrs[i] = &vals[i];
        to_slot(&vals[i], m3_GetArgType(f, i), args[i]);
    }
    rt_obj_t *rt = self->rt;
    rt->pending = MP_OBJ_NULL;
    M3Result err = m3_Call(f, na, ptrs);
    if (err == trap_exception && rt->pending != MP_OBJ_NULL) {
        mp_obj_t e = rt->pending;
        rt->pending = MP_OBJ_NULL;
        nlr_raise(e);
    } else if (err) {
        raise_m3(rt->rt, err);
    }
    uint32_t nr = m3_GetRetCount(f);
    if (nr == 0) {
        return mp_const_none;
    }
    if (nr > MAX_ARGS) {
        raise_runtime("too many rets", NULL);
    }
    for (uint32_t i = 0; i < nr; i++) {
        vals[i] = 0;
        ptrs[i] = &vals[i];
    }
    err = m3_GetResults(f, nr, ptrs);
    if (err) {
        raise_m3(rt->rt, err);
    }
    if (nr == 1) {
        return from_slot(&vals[0], m3_GetRetType(f, 0));
    }
    mp_obj_t items[MAX_ARGS];
    for (uint32_t i = 0; i < nr; i++) {
        items[i] = from_slot(&vals[i], m3_GetRetType(f, i));
    }
    return mp_obj_new_tuple(nr, items);
}

#if MICROPY_ENABLE_DYNRUNTIME
static void init_type(mp_obj_full_type_t *t, qstr name) {
    t->base.type = (void *)&mp_type_type;
    t->flags = MP_TYPE_FLAG_NONE;
    t->name = name;
}

mp_obj_t mpy_init(mp_obj_fun_bc_t *self, size_t n_args, size_t n_kw, mp_obj_t *args) {
    MP_DYNRUNTIME_INIT_ENTRY

    init_type(&wasm3_runtime_type, MP_QSTR_Runtime);
    init_type(&wasm3_link_type, MP_QSTR_Link);
    init_type(&wasm3_function_type, MP_QSTR_Function);
    MP_OBJ_TYPE_SET_SLOT(&wasm3_function_type, call, func_call, 0);

    mp_store_global(MP_QSTR_load, MP_OBJ_FROM_PTR(&w_load_obj));
    mp_store_global(MP_QSTR_link, MP_OBJ_FROM_PTR(&w_link_obj));
    mp_store_global(MP_QSTR_find, MP_OBJ_FROM_PTR(&w_find_obj));
    mp_store_global(MP_QSTR_memory, MP_OBJ_FROM_PTR(&w_memory_obj));
    mp_store_global(MP_QSTR_set_gas, MP_OBJ_FROM_PTR(&w_set_gas_obj));
    mp_store_global(MP_QSTR_gas_used, MP_OBJ_FROM_PTR(&w_gas_used_obj));
    mp_store_global(MP_QSTR_version, mp_obj_new_str(M3_VERSION, sizeof(M3_VERSION) - 1));

    MP_DYNRUNTIME_INIT_EXIT
}
#else
static const mp_rom_map_elem_t wasm3_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_wasm3) },
    { MP_ROM_QSTR(MP_QSTR_load), MP_ROM_PTR(&w_load_obj) },
    { MP_ROM_QSTR(MP_QSTR_link), MP_ROM_PTR(&w_link_obj) },
    { MP_ROM_QSTR(MP_QSTR_find), MP_ROM_PTR(&w_find_obj) },
    { MP_ROM_QSTR(MP_QSTR_memory), MP_ROM_PTR(&w_memory_obj) },
    { MP_ROM_QSTR(MP_QSTR_set_gas), MP_ROM_PTR(&w_set_gas_obj) },
    { MP_ROM_QSTR(MP_QSTR_gas_used), MP_ROM_PTR(&w_gas_used_obj) },
};
static MP_DEFINE_CONST_DICT(wasm3_module_globals, wasm3_module_globals_table);

const mp_obj_module_t wasm3_user_cmodule = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&wasm3_module_globals,
};
MP_REGISTER_MODULE(MP_QSTR_wasm3, wasm3_user_cmodule);
#endif
