//! `vigil bundle inspect`: what a bundle holds, without running anything.

use vigil_core::bundle::Bundle;

use crate::output;

pub(super) fn inspect(b: &Bundle, json: bool) -> anyhow::Result<()> {
    let m = b.manifest();
    let sig = b.signature()?;
    if json {
        let v = serde_json::json!({
            "digest": b.digest(),
            "manifest": m,
            "signature": sig,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{}:{}  ({:?})", m.model.name, m.model.version, m.model.task);
    if !m.model.description.is_empty() {
        println!("  {}", m.model.description);
    }
    println!("digest      sha256:{}", b.digest());
    println!(
        "created     {} by {}",
        m.model.created_at.to_rfc3339(),
        m.model.created_by
    );
    println!(
        "labels      {}",
        m.model
            .labels
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for i in &m.inputs {
        println!("input       {} {:?} {:?}", i.name, i.dtype, i.shape);
    }
    for o in &m.outputs {
        let role = if o.name == m.roles.probabilities {
            " (probabilities)"
        } else if Some(&o.name) == m.roles.embedding.as_ref() {
            " (embedding)"
        } else {
            ""
        };
        println!("output      {} {:?} {:?}{role}", o.name, o.dtype, o.shape);
    }
    println!("preprocess  {}", output::steps(&m.preprocess));
    println!("decision    {}", output::decision(&m.decision));
    let p = &m.provenance;
    println!(
        "provenance  trainer {}{}{}{}",
        p.trainer,
        output::opt(" ", &p.trainer_version),
        output::opt(", commit ", &p.source_commit),
        p.training_data
            .map(|d| format!(", data sha256 {}", d.short()))
            .unwrap_or_default()
    );
    for (k, v) in &p.extra {
        println!("            {k} = {v}");
    }
    let opsets: Vec<String> = m
        .engine
        .opsets
        .iter()
        .map(|(d, v)| format!("{}={v}", if d.is_empty() { "onnx" } else { d }))
        .collect();
    println!(
        "engine      {} IR {}, opsets {}",
        m.engine.model_format,
        m.engine.ir_version,
        opsets.join(", ")
    );
    println!(
        "golden      atol {:e}, rtol {:e}",
        m.golden.atol, m.golden.rtol
    );
    println!("files");
    for (path, digest) in &m.files {
        let size = std::fs::metadata(b.root().join(path))
            .map(|md| md.len())
            .ok();
        println!(
            "  {}  {:>10}  {path}",
            digest.short(),
            size.map(output::bytes).unwrap_or_else(|| "missing".into())
        );
    }
    match sig {
        Some(s) => println!(
            "signature   key {} by {} at {} (run `vigil bundle verify` to check it)",
            s.key_id,
            s.signed_by,
            s.signed_at.to_rfc3339()
        ),
        None => println!("signature   none"),
    }
    Ok(())
}
