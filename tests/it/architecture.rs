//! The module graph stays a DAG: no import cycles between files and no imports up a layer
//! (`tools/imports.sh` holds the layers).

#[test]
fn imports_form_a_dag() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("sh")
        .arg(format!("{root}/tools/imports.sh"))
        .current_dir(root)
        .output()
        .expect("run tools/imports.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("cycles: 0") && text.contains("upward imports: 0"),
        "{text}"
    );
}
