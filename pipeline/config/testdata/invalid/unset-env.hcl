server {
  node = env("SLUICE_TEST_SURELY_UNSET")
}
