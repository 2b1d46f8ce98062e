# wasm3 as a user C module, for make-based ports (unix, stm32, ...):
#   make firmware                       (in aegis-edge: fetches and patches wasm3)
#   make -C ports/unix USER_C_MODULES=/path/to/aegis-edge/firmware/usermod
# See docs/NATIVE.md ("Your own firmware").  Not built in CI.
WASM3_MOD_DIR := $(USERMOD_DIR)
WASM3_SRC ?= $(WASM3_MOD_DIR)/../../build/firmware/wasm3

SRC_USERMOD_C += $(WASM3_MOD_DIR)/../wasm3mod.c $(WASM3_MOD_DIR)/usermod_alloc.c
SRC_USERMOD_LIB_C += $(addprefix $(WASM3_SRC)/,m3_bind.c m3_code.c m3_compile.c m3_core.c \
	m3_emit.c m3_env.c m3_exec.c m3_function.c m3_info.c m3_module.c m3_parse.c)

CFLAGS_USERMOD += -I$(WASM3_SRC) -Dd_m3HasFloat=1 -Dd_m3VerboseErrorMessages=1 \
	-Dd_m3LogOutput=0 -Dd_m3MaxFunctionStackHeight=256 -Dd_m3CodePageAlignSize=1024 \
	-Dcalloc=w3_calloc -Drealloc=w3_realloc -Dfree=w3_free \
	-Wno-unused-function -Wno-unused-variable -Wno-unused-but-set-variable
