// rommap: a file mapped read-only into memory outside the GC heap, for the
// unix (simulated) board's ROMFS (docs/BOARDS.md "Flashed layout").
//
//   addr, size = rommap.map("romfs.img")
//   vfs.mount(vfs.VfsRom(uctypes.bytearray_at(addr, size)), "/rom")
//
// A real board's ROMFS partition is flash the CPU reads in place, so .mpy
// bytecode imported from it never enters the heap; the Unix port has no
// partition (no vfs.rom_ioctl in the PyPI build) and no ffi, and reading the
// image into a bytes object would put it in the very heap being measured.
// So this x64 Linux native module mmaps the image with raw syscalls (a
// natmod has no libc).  The mapping lives as long as the process, as flash
// does: nothing unmaps it.
#include "py/dynruntime.h"

#define SYS_OPEN 2
#define SYS_CLOSE 3
#define SYS_LSEEK 8
#define SYS_MMAP 9
#define O_RDONLY_CLOEXEC 02000000
#define SEEK_END 2
#define PROT_READ 1
#define MAP_PRIVATE 2
#define EINVAL 22

static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile ("syscall"
                      : "=a" (ret)
                      : "a" (n), "D" (a), "S" (b), "d" (c), "r" (r10), "r" (r8), "r" (r9)
                      : "rcx", "r11", "memory");
    return ret;
}

static mp_obj_t rommap_map(mp_obj_t path_in) {
    const char *path = mp_obj_str_get_str(path_in);
    long fd = sys6(SYS_OPEN, (long)path, O_RDONLY_CLOEXEC, 0, 0, 0, 0);
    if (fd < 0) {
        mp_raise_OSError(-fd);
    }
    long size = sys6(SYS_LSEEK, fd, 0, SEEK_END, 0, 0, 0);
    long addr = -EINVAL;            // an empty file cannot be mapped
    if (size > 0) {
        addr = sys6(SYS_MMAP, 0, size, PROT_READ, MAP_PRIVATE, fd, 0);
    } else if (size < 0) {
        addr = size;
    }
    sys6(SYS_CLOSE, fd, 0, 0, 0, 0, 0);     // the mapping outlives the descriptor
    if (addr < 0 && addr > -4096) {
        mp_raise_OSError(-addr);
    }
    mp_obj_t items[2] = {mp_obj_new_int_from_uint(addr), mp_obj_new_int_from_uint(size)};
    return mp_obj_new_tuple(2, items);
}
static MP_DEFINE_CONST_FUN_OBJ_1(rommap_map_obj, rommap_map);

mp_obj_t mpy_init(mp_obj_fun_bc_t *self, size_t n_args, size_t n_kw, mp_obj_t *args) {
    MP_DYNRUNTIME_INIT_ENTRY
    mp_store_global(MP_QSTR_map, MP_OBJ_FROM_PTR(&rommap_map_obj));
    MP_DYNRUNTIME_INIT_EXIT
}
