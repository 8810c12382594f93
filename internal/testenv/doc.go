// Package testenv holds what keyworker's tests share, so that no test file
// keeps its own copy:
//
//   - Harness, for TestMain: one PostgreSQL server per test binary (a
//     throwaway pgtemp server, or the one TEST_DATABASE_URL names) and a
//     database per test, copied from a template that already has the
//     Supabase shape and, with Migrate as its Prepare step, keyworker's
//     migrations;
//   - SetupHostedRole, ScanForSecrets and Count, database helpers only tests
//     use;
//   - CheckWebhookSignature, a Standard Webhooks check that shares no code
//     with package notify;
//   - FastRetry, a River retry policy that retries after 100ms;
//   - LogBuffer, a log destination safe for concurrent writes and reads;
//   - Need and NeedTool, which skip a test whose tool is missing on a
//     developer's machine and fail it under CI (CI=true), where a skip would
//     hide that the check never ran.
//
// The package imports testing, so only tests may import it: the shipped
// binary links pgtemp (for `worker demo`), never testenv.
package testenv
