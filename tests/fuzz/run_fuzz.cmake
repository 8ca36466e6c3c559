# Runs a libFuzzer binary for a bounded time on a fresh copy of its seed corpus, so that the
# fuzzer never writes into the source tree. Variables: FUZZER (binary), SEEDS (corpus directory),
# WORK (scratch directory in the build tree), OPTIONS (;-separated libFuzzer flags).
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}/artifacts")
file(COPY "${SEEDS}/" DESTINATION "${WORK}/corpus")
execute_process(
  COMMAND "${FUZZER}" ${OPTIONS} "-artifact_prefix=${WORK}/artifacts/" "${WORK}/corpus"
  RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "${FUZZER} failed (exit ${result}); crashing inputs are in ${WORK}/artifacts")
endif()
