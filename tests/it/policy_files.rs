//! Policy files are refused with file, line and reason, through the real binary:
//! `net-pathway policy check FILE` and start-up with `--policy`.

use std::path::{Path, PathBuf};

use crate::common::run_to_exit;

const BUNDLED: &str = include_str!("../../policy/net-pathway.toml");
/// The check line of the `sstr-positive` criterion, with its parameters so that it is unique.
const SSTR_CHECK: &str = "check = \"krenning_at_least\"\nparams = { score = 2 }   # the Lutathera";

/// Writes `text` as a policy file in a fresh temporary directory.
fn policy_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, text).expect("write policy");
    (dir, path)
}

/// The bundled policy with one edit; panics if the text to replace is not there exactly once.
fn edited(from: &str, to: &str) -> String {
    assert_eq!(
        BUNDLED.matches(from).count(),
        1,
        "edit target must be unique: {from}"
    );
    BUNDLED.replacen(from, to, 1)
}

/// 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text.find(needle).expect("needle present");
    text[..at].matches('\n').count() + 1
}

fn check(path: &Path) -> (i32, String) {
    let (code, output) = run_to_exit(&["policy".as_ref(), "check".as_ref(), path.as_os_str()]);
    (code.unwrap_or(-1), output)
}

#[test]
fn the_bundled_policy_checks_clean() {
    let (_dir, path) = policy_file(BUNDLED);
    let (code, output) = check(&path);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("example cases pass"), "{output}");
}

#[test]
fn an_unknown_criterion_check_is_refused_with_its_line() {
    let text = edited(
        SSTR_CHECK,
        &SSTR_CHECK.replace("krenning_at_least", "krenning_at_leest"),
    );
    let (_dir, path) = policy_file(&text);
    let (code, output) = check(&path);
    assert_eq!(code, 2, "{output}");
    let line = line_of(&text, "id = \"sstr-positive\"") - 1;
    assert!(
        output.contains(&format!(
            "policy.toml:{line}: criterion 'sstr-positive': unknown check 'krenning_at_leest'"
        )),
        "{output}"
    );
}

#[test]
fn a_criterion_citing_a_source_to_verify_must_say_so() {
    // Position 11: a criterion no document supports is tagged to verify, never presented as
    // sourced; the loader refuses one that cites a to-verify source without saying so.
    let find = "source = \"children-cancer-services\"\nto_verify = true\n\n[[criteria]]\nid = \"lutathera-adult\"";
    let text = edited(find, &find.replace("to_verify = true\n", ""));
    let (_dir, path) = policy_file(&text);
    let (code, output) = check(&path);
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains(
            "criterion 'child': its source 'children-cancer-services' is tagged to_verify"
        ),
        "{output}"
    );
}

#[test]
fn a_parameter_of_the_wrong_type_is_refused() {
    let text = edited(
        "params = { score = 2 }   # the Lutathera",
        "params = { score = \"two\" }   # the Lutathera",
    );
    let (_dir, path) = policy_file(&text);
    let (code, output) = check(&path);
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains("criterion 'sstr-positive': invalid parameters"),
        "{output}"
    );
}

#[test]
fn a_missing_source_is_refused() {
    let text = edited(
        "source = \"dual-tracer-pet\"",
        "source = \"no-such-source\"",
    );
    let (_dir, path) = policy_file(&text);
    let (code, output) = check(&path);
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains("unknown source 'no-such-source'"),
        "{output}"
    );
}

#[test]
fn a_criterion_without_a_source_field_is_refused() {
    let text = edited(
        "check = \"progressive_disease\"\nsource = \"nice-ta539\"",
        "check = \"progressive_disease\"",
    );
    let (_dir, path) = policy_file(&text);
    let (code, output) = check(&path);
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("missing field `source`"), "{output}");
}

#[test]
fn overlapping_delivery_dates_are_refused() {
    let text = edited(
        "effective_from = 2025-07-29, source = \"velindre-prrt-2025\"",
        "effective_from = 2025-07-01, source = \"velindre-prrt-2025\"",
    );
    let (_dir, path) = policy_file(&text);
    let (code, output) = check(&path);
    assert_eq!(code, 2, "{output}");
    let line = line_of(&text, "effective_from = 2025-07-01");
    assert!(output.contains(&format!("policy.toml:{line}: therapy PRRT: lutetium-177 DOTATATE delivery: this date range overlaps")), "{output}");
}

#[test]
fn a_toml_syntax_error_names_the_line() {
    let text = edited(
        "[[therapies]]\ntherapy = \"prrt_lu177_dotatate\"",
        "[[therapies]]\ntherapy = prrt_lu177_dotatate",
    );
    let (_dir, path) = policy_file(&text);
    let (code, output) = check(&path);
    assert_eq!(code, 2, "{output}");
    let line = line_of(&text, "therapy = prrt_lu177_dotatate");
    assert!(output.contains(&format!("policy.toml:{line}:")), "{output}");
}

#[test]
fn a_policy_whose_example_case_fails_is_refused_with_exit_3() {
    // Move Velindre's start a day later: the "after the move" case (as of 2025-08-01) still
    // passes, so change the case date to the boundary day to make it fail.
    let text = edited(
        "effective_from = 2025-07-29, source",
        "effective_from = 2025-08-02, source",
    )
    .replace(
        "effective_to = 2025-07-28, source",
        "effective_to = 2025-08-01, source",
    );
    let (_dir, path) = policy_file(&text);
    let (code, output) = check(&path);
    assert_eq!(code, 3, "{output}");
    assert!(
        output.contains("South Wales patient after the move: PRRT at Velindre"),
        "{output}"
    );
    assert!(
        output.contains("expected delivery sites [\"velindre\"], got [\"royal-free-london\"]"),
        "{output}"
    );
}

#[test]
fn the_server_refuses_to_start_on_a_broken_policy() {
    let text = edited(
        SSTR_CHECK,
        &SSTR_CHECK.replace("krenning_at_least", "nonsense"),
    );
    let (_dir, path) = policy_file(&text);
    let (code, logs) = run_to_exit(&[
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--policy".as_ref(),
        path.as_os_str(),
    ]);
    assert_eq!(code, Some(2), "{logs}");
    assert!(
        logs.contains("refusing to start") && logs.contains("unknown check 'nonsense'"),
        "{logs}"
    );
}

#[test]
fn an_unknown_patient_input_is_refused_listing_the_known_ones() {
    let text = edited(
        "params = { input = \"labs.haemoglobin_g_per_l\", threshold = 80.0 }",
        "params = { input = \"labs.hemoglobin\", threshold = 80.0 }",
    );
    let (_dir, path) = policy_file(&text);
    let (code, output) = check(&path);
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains("unknown numeric input 'labs.hemoglobin'; known inputs:"),
        "{output}"
    );
    assert!(output.contains("labs.haemoglobin_g_per_l"), "{output}");
}
