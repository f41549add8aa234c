# Where the binary and the bundled model go: bin/pensieve and
# share/pensieve/models/stories260K, under an install prefix (cmake --install,
# the .deb below) and in the build tree alike, so that `pensieve serve` finds
# the model relative to its own folder (../share/pensieve) wherever it was
# built or installed (src/cli/cmd_serve.cc, bundled_model_dir).
include(GNUInstallDirs)

set(PENSIEVE_BUNDLED_MODEL ${PROJECT_SOURCE_DIR}/models/stories260K)
# What serving needs (greedy-reference.json is test data).
set(PENSIEVE_BUNDLED_MODEL_FILES
    LICENSE config.json generation_config.json model.safetensors tokenizer.json
    tokenizer_config.json)
set(PENSIEVE_MODEL_SUBDIR ${CMAKE_INSTALL_DATADIR}/pensieve/models/stories260K)

# The build tree's copy.
set(model_outputs)
foreach(f ${PENSIEVE_BUNDLED_MODEL_FILES})
  set(out ${PROJECT_BINARY_DIR}/${PENSIEVE_MODEL_SUBDIR}/${f})
  add_custom_command(OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -E copy_if_different ${PENSIEVE_BUNDLED_MODEL}/${f} ${out}
    DEPENDS ${PENSIEVE_BUNDLED_MODEL}/${f}
    COMMENT "Copying the bundled model's ${f} into the build tree" VERBATIM)
  list(APPEND model_outputs ${out})
endforeach()
add_custom_target(pensieve_bundled_model ALL DEPENDS ${model_outputs})
add_dependencies(pensieve pensieve_bundled_model)

install(TARGETS pensieve RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
foreach(f ${PENSIEVE_BUNDLED_MODEL_FILES})
  install(FILES ${PENSIEVE_BUNDLED_MODEL}/${f} DESTINATION ${PENSIEVE_MODEL_SUBDIR})
endforeach()
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
# systemd user units (socket activation): PREFIX/lib/systemd/user, where
# systemd looks for them under /usr and /usr/local.
install(FILES ${PROJECT_SOURCE_DIR}/packaging/systemd/pensieve.service
              ${PROJECT_SOURCE_DIR}/packaging/systemd/pensieve.socket
        DESTINATION lib/systemd/user)

# cpack -G DEB (in the build folder): pensieve_VERSION_ARCH.deb installing
# into /usr, with its library dependencies found by dpkg-shlibdeps.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME pensieve)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "Local LLM inference server that speaks the Anthropic Messages API")
set(CPACK_PACKAGE_CONTACT "Pensieve developers <pensieve@localhost>")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_STRIP_FILES ON)
include(CPack)
