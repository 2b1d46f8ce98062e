# wasm3 as a user C module, for CMake-based ports (rp2, esp32):
#   make firmware                       (in aegis-edge: fetches and patches wasm3)
#   make -C ports/esp32 BOARD=ESP32_GENERIC \
#        USER_C_MODULES=/path/to/aegis-edge/firmware/usermod/micropython.cmake
# See docs/NATIVE.md ("Your own firmware").  Not built in CI.
add_library(usermod_wasm3 INTERFACE)
set(WASM3_SRC ${CMAKE_CURRENT_LIST_DIR}/../../build/firmware/wasm3)

target_sources(usermod_wasm3 INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}/../wasm3mod.c
    ${CMAKE_CURRENT_LIST_DIR}/usermod_alloc.c
    ${WASM3_SRC}/m3_bind.c ${WASM3_SRC}/m3_code.c ${WASM3_SRC}/m3_compile.c
    ${WASM3_SRC}/m3_core.c ${WASM3_SRC}/m3_emit.c ${WASM3_SRC}/m3_env.c
    ${WASM3_SRC}/m3_exec.c ${WASM3_SRC}/m3_function.c ${WASM3_SRC}/m3_info.c
    ${WASM3_SRC}/m3_module.c ${WASM3_SRC}/m3_parse.c
)
target_include_directories(usermod_wasm3 INTERFACE ${WASM3_SRC})
target_compile_definitions(usermod_wasm3 INTERFACE
    d_m3HasFloat=1 d_m3VerboseErrorMessages=1 d_m3LogOutput=0
    d_m3MaxFunctionStackHeight=256 d_m3CodePageAlignSize=1024
    calloc=w3_calloc realloc=w3_realloc free=w3_free
)
target_link_libraries(usermod INTERFACE usermod_wasm3)
