# The CUDA backend on the emulated CUDA device (src/emu; docs/CUDA.md, "The emulated device"):
# the same sources as the nvcc build (src/cuda/*.cu, src/kernels/cuda/*.cu), compiled as C++ by
# the host compiler against src/emu/include (cuda_runtime.h, cublasLt.h, nccl.h, mma.h, ...),
# which stand in for the toolkit's headers; no GPU, no toolkit, no libcudart/cuBLASLt/NCCL.
# Every test in tests/cuda runs (none skips for want of a device), plus the emulator's own tests
# in tests/emu. Included from cmake/cuda.cmake, which it replaces in such a build.
# Host code with CUDA in it is named .cu wherever it lives (src/cuda, dist's NCCL communicator,
# src/backends): that keeps it out of the CPU library's src/**/*.cpp glob.
file(GLOB TESSERA_CUDA_HOST_SOURCES CONFIGURE_DEPENDS src/cuda/*.cu src/dist/*.cu src/backends/*.cu)
# src/backends/cuda.cu stands in for the CPU-only build's table of backends.
set_source_files_properties(src/backends/host_only.cpp PROPERTIES HEADER_FILE_ONLY ON)
file(GLOB TESSERA_CUDA_KERNEL_SOURCES CONFIGURE_DEPENDS src/kernels/cuda/*.cu)
file(GLOB TESSERA_EMU_SOURCES CONFIGURE_DEPENDS src/emu/*.cpp)
set_source_files_properties(${TESSERA_CUDA_HOST_SOURCES} ${TESSERA_CUDA_KERNEL_SOURCES}
                            PROPERTIES LANGUAGE CXX)
# Code that holds kernels is compiled with ThreadSanitizer's instrumentation (a call before each
# load and store, none at function entry) but linked without its runtime: the emulator defines
# the hooks (src/emu/racecheck.cpp). They return at once unless TESSERA_EMU_RACECHECK=1, when
# they find shared-memory races (docs/CUDA.md).
set(TESSERA_EMU_INSTRUMENT -fsanitize=thread --param=tsan-instrument-func-entry-exit=0 -Wno-tsan)
set_source_files_properties(${TESSERA_CUDA_HOST_SOURCES} ${TESSERA_CUDA_KERNEL_SOURCES}
                            PROPERTIES COMPILE_OPTIONS "${TESSERA_EMU_INSTRUMENT}")
target_sources(tessera PRIVATE ${TESSERA_CUDA_HOST_SOURCES} ${TESSERA_CUDA_KERNEL_SOURCES}
                               ${TESSERA_EMU_SOURCES})
# Before every other include folder, so that <cuda_runtime.h> & co. are the emulator's even
# where a toolkit is installed.
target_include_directories(tessera BEFORE PUBLIC src/emu/include)
target_compile_definitions(tessera PUBLIC TESSERA_CUDA_EMULATION=1)
# .cu files are compiled as C++ (-x c++: CMake passes the language for LANGUAGE CXX sources).
find_package(Threads REQUIRED)
target_link_libraries(tessera PUBLIC Threads::Threads)
add_library(tessera_cuda INTERFACE)
target_link_libraries(tessera_cuda INTERFACE tessera)
message(STATUS "CUDA backend: emulated CUDA device (src/emu), host compiler ${CMAKE_CXX_COMPILER}")

if(TESSERA_BUILD_TESTS)
  file(GLOB TESSERA_CUDA_TEST_SOURCES CONFIGURE_DEPENDS tests/cuda/test_*.cpp tests/emu/test_*.cpp)
  foreach(src ${TESSERA_CUDA_TEST_SOURCES})
    get_filename_component(name ${src} NAME_WE)
    add_executable(${name} ${src})
    target_compile_options(${name} PRIVATE ${TESSERA_WARNINGS} ${TESSERA_OPT}
                                           ${TESSERA_EMU_INSTRUMENT})
    # test_nccl_* and test_emu_nccl have their own main (the CPU communicator, MPI under mpirun).
    if(name MATCHES "nccl")
      target_link_libraries(${name} PRIVATE tessera_cuda GTest::gtest)
    else()
      target_link_libraries(${name} PRIVATE tessera_cuda GTest::gtest GTest::gtest_main)
    endif()
    target_include_directories(${name} PRIVATE tests tests/cuda)
    target_compile_definitions(${name} PRIVATE TESSERA_SOURCE_DIR="${CMAKE_CURRENT_SOURCE_DIR}")
    # The no-device tests skip where a device is present: they run below, on an emulated
    # machine without one, instead.
    gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST TEST_FILTER "-*WithoutADevice*"
                         PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2" LABELS emu
                         TIMEOUT 600)
  endforeach()
  # The no-device paths (errors that name the missing device) on an emulated machine with no GPU.
  add_test(NAME emu_no_device_errors COMMAND test_cuda_shared --gtest_filter=*WithoutADevice*)
  set_tests_properties(emu_no_device_errors PROPERTIES ENVIRONMENT "TESSERA_EMU_DEVICES=0"
                       LABELS "cuda;emu")
  add_test(NAME emu_no_device_nccl_errors COMMAND test_nccl_comm --gtest_filter=*WithoutADevice*)
  set_tests_properties(emu_no_device_nccl_errors PROPERTIES ENVIRONMENT "TESSERA_EMU_DEVICES=0"
                       LABELS "cuda;emu")
  # The kernel tests again with each block's threads run in reverse order between barriers
  # (TESSERA_EMU_SCHEDULE): a race on shared memory then changes a kernel's result.
  foreach(name test_emu_device test_cuda_kernels test_cuda_kernels_nn test_cuda_optim)
    add_test(NAME emu_reverse_schedule_${name} COMMAND ${name} --gtest_filter=-*DeathTest*)
    set_tests_properties(emu_reverse_schedule_${name} PROPERTIES
                         ENVIRONMENT "TESSERA_EMU_SCHEDULE=reverse;OMP_NUM_THREADS=2"
                         LABELS "cuda;emu" TIMEOUT 600)
  endforeach()
  add_test(NAME emu_reverse_schedule_test_cuda_attention_tc
           COMMAND test_cuda_attention_tc --gtest_filter=*Bf16*:*Repeat*)
  set_tests_properties(emu_reverse_schedule_test_cuda_attention_tc PROPERTIES
                       ENVIRONMENT "TESSERA_EMU_SCHEDULE=reverse;OMP_NUM_THREADS=2"
                       LABELS "cuda;emu" TIMEOUT 600)
  # The kernel tests again with the race check on: races on shared memory within a block
  # (src/emu/racecheck.h), and races between streams on device memory (src/emu/streamrace.h),
  # which the runtime, training, ZeRO and NCCL tests exercise with several streams.
  function(add_racecheck_test name binary filter)
    add_test(NAME ${name} COMMAND ${binary} --gtest_filter=${filter})
    set_tests_properties(${name} PROPERTIES ENVIRONMENT "TESSERA_EMU_RACECHECK=1;OMP_NUM_THREADS=2"
                                            LABELS "cuda;emu" TIMEOUT 900)
  endfunction()
  foreach(name test_cuda_kernels test_cuda_kernels_nn test_cuda_optim test_cuda_attention_tc
               test_cuda_runtime test_cuda_zero test_emu_host_waits)
    add_racecheck_test(emu_racecheck_${name} ${name} -*DeathTest*)
  endforeach()
  # test_cuda_train in two parts (its GPT runs, the rest): whole, it took 520 s of its 900 s
  # under the race check in CI, and 725 s when other work shared the two cores.
  add_racecheck_test(emu_racecheck_test_cuda_train_gpt test_cuda_train CudaTrain.GPT*)
  add_racecheck_test(emu_racecheck_test_cuda_train_rest test_cuda_train
                     -CudaTrain.GPT*:*DeathTest*)
  if(TESSERA_HAVE_MPI)
    foreach(name test_nccl_comm test_emu_nccl)
      if(TARGET ${name})
        add_test(NAME ${name}_2_ranks
                 COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root -np 2
                         $<TARGET_FILE:${name}>)
        set_tests_properties(${name}_2_ranks PROPERTIES
                             ENVIRONMENT "OMP_NUM_THREADS=1;OMPI_MCA_btl_vader_single_copy_mechanism=none;TESSERA_EMU_DEVICES=2;TESSERA_EMU_RACECHECK=1"
                             LABELS "cuda;emu;mpi" TIMEOUT 300)
      endif()
    endforeach()
    if(TARGET tessera_cli)
      add_test(NAME emu_train_2_ranks
               COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/tests/emu/train_2_ranks.sh
                       $<TARGET_FILE:tessera_cli> "${MPIEXEC_EXECUTABLE}")
      set_tests_properties(emu_train_2_ranks PROPERTIES
                           ENVIRONMENT "OMP_NUM_THREADS=1;OMPI_MCA_btl_vader_single_copy_mechanism=none;TESSERA_EMU_RACECHECK=1"
                           LABELS "cuda;emu;mpi" TIMEOUT 900)
      # The same job started torchrun-style (no mpirun: rank 0's TCP store carries NCCL's id),
      # its losses against mpirun's, and the store's start-up failures.
      add_test(NAME emu_train_torchrun_2_ranks
               COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/tests/emu/train_torchrun_2_ranks.sh
                       $<TARGET_FILE:tessera_cli> "${MPIEXEC_EXECUTABLE}")
      set_tests_properties(emu_train_torchrun_2_ranks PROPERTIES
                           ENVIRONMENT "OMP_NUM_THREADS=1;OMPI_MCA_btl_vader_single_copy_mechanism=none"
                           LABELS "cuda;emu;mpi" TIMEOUT 900)
    endif()
  endif()
endif()

# What scripts/test.sh builds in this configuration: the CUDA tests, the emulator's tests and the
# command line (for `tessera train train.device=cuda` on the emulated device).
add_custom_target(emu_tests)
if(TESSERA_BUILD_TESTS)
  foreach(src ${TESSERA_CUDA_TEST_SOURCES})
    get_filename_component(name ${src} NAME_WE)
    add_dependencies(emu_tests ${name})
  endforeach()
endif()
if(TARGET tessera_cli)
  add_dependencies(emu_tests tessera_cli)
endif()

if(NOT TARGET bench_train_step)
  add_executable(bench_train_step bench/bench_train_step.cpp)
  target_compile_options(bench_train_step PRIVATE ${TESSERA_WARNINGS} ${TESSERA_OPT})
  target_link_libraries(bench_train_step PRIVATE tessera)
endif()
