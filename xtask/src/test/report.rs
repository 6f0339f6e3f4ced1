//! Reads `cargo test` output as it streams by and keeps what failed: which
//! test binary, which tests, the first lines of each panic, and the
//! arguments cargo says rerun it. `cargo xtask test` prints this at the end,
//! so a failure early in a long run is not lost in what follows.

/// How many lines of a failed test's output the summary keeps.
const EXCERPT_LINES: usize = 8;

/// One failed test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FailedTest {
    /// The test binary (`tests/cli.rs`, `unittests src/lib.rs (imds_agent)`).
    pub(crate) binary: String,
    /// The test's name.
    pub(crate) name: String,
    /// The start of its panic message (from "panicked at").
    pub(crate) excerpt: Vec<String>,
}

/// A test binary that failed, with cargo's rerun arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FailedBinary {
    /// As in `FailedTest::binary`.
    pub(crate) binary: String,
    /// What cargo says to pass to rerun it (`--test cli`).
    pub(crate) rerun: String,
}

/// What failed in one `cargo test` run.
#[derive(Debug, Default)]
pub(crate) struct TestReport {
    /// Every failed test, in the order reported.
    pub(crate) tests: Vec<FailedTest>,
    /// Every failed binary (a binary can fail with no failed test: a crash,
    /// a build error).
    pub(crate) binaries: Vec<FailedBinary>,
    /// The binary whose output is streaming.
    current: String,
    /// The failed test whose captured output is being read, and whether its
    /// panic line was seen.
    capturing: Option<(usize, bool)>,
}

impl TestReport {
    /// Takes one line of cargo's output (stdout and stderr merged).
    pub(crate) fn line(&mut self, line: &str) {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("Running ") {
            self.current = binary_label(rest);
            self.capturing = None;
        } else if let Some(krate) = trimmed.strip_prefix("Doc-tests ") {
            self.current = format!("doc-tests {krate}");
            self.capturing = None;
        } else if let Some(name) = trimmed
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            self.failed_test(name);
        } else if let Some(name) = trimmed
            .strip_prefix("---- ")
            .and_then(|rest| rest.strip_suffix(" stdout ----"))
        {
            let index = self.failed_test(name);
            self.capturing = Some((index, false));
        } else if trimmed == "failures:" || trimmed.starts_with("test result: ") {
            self.capturing = None;
        } else if let Some(rerun) = trimmed
            .strip_prefix("error: test failed, to rerun pass `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            self.binaries.push(FailedBinary {
                binary: self.current.clone(),
                rerun: rerun.to_owned(),
            });
            self.capturing = None;
        } else if let Some((index, seen_panic)) = self.capturing {
            let excerpt = &mut self.tests[index].excerpt;
            // The test's own output (an agent's log) may come first: the
            // panic message is what says what went wrong.
            if !seen_panic && line.contains("panicked at") {
                excerpt.clear();
                self.capturing = Some((index, true));
            }
            if excerpt.len() < EXCERPT_LINES && !trimmed.is_empty() {
                excerpt.push(line.to_owned());
            }
        }
    }

    /// The entry for test `name` of the current binary, made if new.
    fn failed_test(&mut self, name: &str) -> usize {
        let found = self
            .tests
            .iter()
            .position(|t| t.binary == self.current && t.name == name);
        found.unwrap_or_else(|| {
            self.tests.push(FailedTest {
                binary: self.current.clone(),
                name: name.to_owned(),
                excerpt: Vec::new(),
            });
            self.tests.len() - 1
        })
    }

    /// Whether anything failed.
    pub(crate) fn is_empty(&self) -> bool {
        self.tests.is_empty() && self.binaries.is_empty()
    }

    /// The summary printed at the end of `cargo xtask test`.
    pub(crate) fn summary(&self) -> String {
        let mut out = String::new();
        for test in &self.tests {
            out.push_str(&format!("  FAILED {} :: {}\n", test.binary, test.name));
            for line in &test.excerpt {
                out.push_str(&format!("      {line}\n"));
            }
        }
        for binary in &self.binaries {
            let count = self
                .tests
                .iter()
                .filter(|t| t.binary == binary.binary)
                .count();
            let why = if count == 0 {
                " (no test reported failing: it crashed or did not build; see above)".to_owned()
            } else {
                format!(" ({count} failed)")
            };
            out.push_str(&format!(
                "  binary {}{why}: rerun with `cargo test {} <features>`\n",
                binary.binary, binary.rerun
            ));
        }
        out
    }
}

/// `tests/cli.rs (target/debug/deps/cli-0a1b)` → `tests/cli.rs`;
/// `unittests src/lib.rs (target/debug/deps/imds_agent-0a1b)` →
/// `unittests src/lib.rs (imds_agent)`: unit test binaries of two crates
/// share a source path.
fn binary_label(running: &str) -> String {
    let (source, path) = running
        .split_once(" (")
        .map_or((running, ""), |(s, p)| (s, p.trim_end_matches(')')));
    if !source.starts_with("unittests ") {
        return source.to_owned();
    }
    let file = path.rsplit('/').next().unwrap_or(path);
    let krate = file.rsplit_once('-').map_or(file, |(name, _hash)| name);
    format!("{source} ({krate})")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of `cargo test --no-fail-fast` output (cargo 1.95), two
    /// binaries failing: one with two failed tests, one crashing.
    const OUTPUT: &str = "\
   Compiling imds-agent v0.1.0 (/work/main/agent)
    Finished `test` profile [unoptimized + debuginfo] target(s) in 1m 02s
     Running unittests src/lib.rs (target/debug/deps/imds_agent-2f0c7a1e5b9d3c41)

running 2 tests
test imds::tests::ok ... ok
test imds::tests::fine ... ok

test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

     Running tests/cli.rs (target/debug/deps/cli-9a8b7c6d5e4f3a2b)

running 3 tests
test usage_errors_are_exit_2 ... ok
test dev_prints_the_export_line_and_serves_it ... FAILED
test port_in_use_is_exit_3 ... FAILED

failures:

---- dev_prints_the_export_line_and_serves_it stdout ----
2026-12-01T20:00:00Z INFO imds_agent: listening addr=127.0.0.1:4242

thread 'dev_prints_the_export_line_and_serves_it' panicked at tests/cli.rs:115:5:
imds-agent dev: EC2 instance metadata on http://127.0.0.1:4242/
export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:4242/
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace

---- port_in_use_is_exit_3 stdout ----

thread 'port_in_use_is_exit_3' panicked at tests/cli.rs:98:5:
assertion `left == right` failed
  left: Some(1)
 right: Some(3)


failures:
    dev_prints_the_export_line_and_serves_it
    port_in_use_is_exit_3

test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 2.31s

error: test failed, to rerun pass `--test cli`
     Running tests/host.rs (target/debug/deps/host-0123456789abcdef)

running 1 test
error: test failed, to rerun pass `--test host`

Caused by:
  process didn't exit successfully: `/work/main/target/debug/deps/host-0123456789abcdef` (signal: 11, SIGSEGV: invalid memory reference)
     Running unittests src/main.rs (target/debug/deps/xtask-00aa11bb22cc33dd)

running 1 test
test test::report::tests::ok ... ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

error: 2 targets failed:
    `--test cli`
    `--test host`
";

    fn report(output: &str) -> TestReport {
        let mut report = TestReport::default();
        for line in output.lines() {
            report.line(line);
        }
        report
    }

    #[test]
    fn keeps_every_failure_of_every_binary() {
        let report = report(OUTPUT);
        let names: Vec<(&str, &str)> = report
            .tests
            .iter()
            .map(|t| (t.binary.as_str(), t.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("tests/cli.rs", "dev_prints_the_export_line_and_serves_it"),
                ("tests/cli.rs", "port_in_use_is_exit_3"),
            ]
        );
        assert_eq!(
            report.binaries,
            [
                FailedBinary {
                    binary: "tests/cli.rs".into(),
                    rerun: "--test cli".into()
                },
                FailedBinary {
                    binary: "tests/host.rs".into(),
                    rerun: "--test host".into()
                },
            ]
        );
    }

    #[test]
    fn the_excerpt_starts_at_the_panic_and_is_bounded() {
        let report = report(OUTPUT);
        let first = &report.tests[0].excerpt;
        assert!(
            first[0].contains("panicked at tests/cli.rs:115:5"),
            "{first:?}"
        );
        assert!(
            !first.iter().any(|l| l.contains("listening addr")),
            "{first:?}"
        );
        let second = &report.tests[1].excerpt;
        assert_eq!(second[1], "assertion `left == right` failed");
        let mut long = String::from("     Running tests/x.rs (target/debug/deps/x-1)\n");
        long.push_str("---- t stdout ----\nthread 't' panicked at tests/x.rs:1:1:\n");
        for i in 0..100 {
            long.push_str(&format!("log line {i}\n"));
        }
        assert_eq!(
            super::tests::report(&long).tests[0].excerpt.len(),
            EXCERPT_LINES
        );
    }

    #[test]
    fn the_summary_names_a_crashed_binary_and_how_to_rerun() {
        let summary = report(OUTPUT).summary();
        assert!(
            summary.contains("FAILED tests/cli.rs :: port_in_use_is_exit_3"),
            "{summary}"
        );
        assert!(
            summary.contains("binary tests/cli.rs (2 failed): rerun with `cargo test --test cli"),
            "{summary}"
        );
        assert!(
            summary.contains("binary tests/host.rs (no test reported failing"),
            "{summary}"
        );
    }

    #[test]
    fn unit_test_binaries_are_told_apart_by_crate() {
        assert_eq!(
            binary_label("unittests src/main.rs (target/debug/deps/xtask-00aa11bb22cc33dd)"),
            "unittests src/main.rs (xtask)"
        );
        assert_eq!(
            binary_label("unittests src/lib.rs (target/debug/deps/imds_agent-2f0c)"),
            "unittests src/lib.rs (imds_agent)"
        );
        assert_eq!(
            binary_label("tests/cli.rs (target/debug/deps/cli-9a8b)"),
            "tests/cli.rs"
        );
        assert!(report("").is_empty());
    }
}
