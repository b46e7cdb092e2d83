// Package conformance runs libiscsi's iscsi-test-cu against hatarget and
// holds the result against a checked-in list of expected verdicts
// (expected.txt), so that a protocol regression fails CI even when the
// tool's own summary says "passed".
//
// Why the tool's summary cannot be trusted as is:
//
//   - A libiscsi test that finds a feature missing calls
//     CU_PASS("[SKIPPED] ...") and returns, so CUnit counts it as passed.
//     The only trace of the skip is the "[SKIPPED]" line the test prints
//     between "Test: NAME ..." and CUnit's "passed". Several of those lines
//     are logged at LOG_VERBOSE, so the tool must run with --Verbose-scsi
//     (-V) for every skip to be visible (against tgt 1.0.85, three skips
//     are invisible without it).
//   - CUnit's XML mode (-x) records skips as CUNIT_RUN_TEST_SUCCESS and
//     interleaves no test output, so it cannot tell a skip from a pass.
//   - When a suite's set-up (an iSCSI login) fails, CUnit runs none of its
//     tests, counts zero test failures and the tool exits 0.
//   - A hung target hangs the tool forever: libiscsi's synchronous calls
//     have no default timeout.
//
// ParseOutput turns the verbose output into one Result per test, Compare
// checks those against expected.txt, and TestConformance (in
// conformance_test.go) starts hatarget and drives the whole run.
package conformance
