# libFuzzer targets for Tessera's file parsers (fuzz/fuzz_*.cpp; docs/FUZZING.md).
#
#   cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DTESSERA_FUZZ=ON \
#         -DTESSERA_BUILD_TESTS=OFF -DTESSERA_BUILD_BENCH=OFF -DTESSERA_WITH_MPI=OFF
#
# The parsers and what they link are compiled a second time, into `tessera_fuzz_lib`, with
# coverage instrumentation and AddressSanitizer + UndefinedBehaviorSanitizer; the normal
# `tessera` library is untouched. Only the layers a parser can reach go in (no dist, optim or
# training loop), which keeps the build short on CI's two cores.
option(TESSERA_FUZZ "Build the libFuzzer parser targets (needs clang)" OFF)
if(NOT TESSERA_FUZZ)
  return()
endif()
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR
          "TESSERA_FUZZ=ON needs clang (libFuzzer ships with it), but the C++ compiler is "
          "${CMAKE_CXX_COMPILER_ID} (${CMAKE_CXX_COMPILER}). Configure a separate build folder "
          "with -DCMAKE_CXX_COMPILER=clang++, or run scripts/fuzz.sh.")
endif()

# -O1 as OSS-Fuzz builds: faster to compile than Release's -O3, fast enough to run.
set(TESSERA_FUZZ_SANITIZERS -fsanitize=address,undefined -fno-sanitize-recover=undefined
                            -fno-omit-frame-pointer -g -O1)

# Every layer up to nn/, data/ and tokenizer/ (with backends/, the CPU-only backend table core
# looks up), plus the config parser with the model-kind table it validates against and the
# checkpoint-JSON parsers and TESSERA_FAULT_STALL's; a file another engineer adds to these
# folders is picked up by the same glob as the main library.
set(TESSERA_FUZZ_SOURCE_PATTERNS
    "src/(backends|core|kernels/cpu|ops|autograd|nn|data|tokenizer)/[^/]+\\.cpp$"
    "src/train/(config[^/]*|model_kinds|fault_stall)\\.cpp$" "src/ckpt/manifest\\.cpp$")
list(JOIN TESSERA_FUZZ_SOURCE_PATTERNS "|" TESSERA_FUZZ_SOURCE_REGEX)
set(TESSERA_FUZZ_SOURCES ${TESSERA_SOURCES})
list(FILTER TESSERA_FUZZ_SOURCES INCLUDE REGEX "${TESSERA_FUZZ_SOURCE_REGEX}")
add_library(tessera_fuzz_lib STATIC ${TESSERA_FUZZ_SOURCES})
target_include_directories(tessera_fuzz_lib PUBLIC src)
# -Wno-pass-failed: with sanitizers clang cannot vectorize the `omp simd` loops and says so.
target_compile_options(tessera_fuzz_lib PRIVATE ${TESSERA_WARNINGS} -Wno-pass-failed ${TESSERA_OPT}
                       PUBLIC ${TESSERA_FUZZ_SANITIZERS} -fsanitize=fuzzer-no-link)
# toml++ compiled in (header-only) rather than Debian's shared library, so the fuzzer sees
# coverage inside the TOML parser and the sanitizers check it too.
target_compile_definitions(tessera_fuzz_lib PUBLIC TESSERA_HAVE_MPI=0 TOML_HEADER_ONLY=1)
target_link_libraries(tessera_fuzz_lib PUBLIC OpenMP::OpenMP_CXX tessera_dnnl fmt::fmt
                                              ZLIB::ZLIB nlohmann_json::nlohmann_json
                                              PkgConfig::PCRE2)

file(GLOB TESSERA_FUZZ_TARGETS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_*.cpp)
set(TESSERA_FUZZ_TARGET_NAMES)
foreach(src ${TESSERA_FUZZ_TARGETS})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_compile_options(${name} PRIVATE ${TESSERA_WARNINGS} -fsanitize=fuzzer)
  target_link_options(${name} PRIVATE ${TESSERA_FUZZ_SANITIZERS} -fsanitize=fuzzer)
  target_link_libraries(${name} PRIVATE tessera_fuzz_lib)
  list(APPEND TESSERA_FUZZ_TARGET_NAMES ${name})
endforeach()
add_custom_target(fuzz_all DEPENDS ${TESSERA_FUZZ_TARGET_NAMES})
