//! Every example in `configs/` parses and validates.
use crate::common::repo;

#[test]
fn every_example_config_parses() {
    let mut n = 0;
    for entry in std::fs::read_dir(repo().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let loaded = spotrun::config::load(Some(&path), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.config.train.name.as_deref(), path.file_stem().and_then(|s| s.to_str()));
        n += 1;
    }
    assert!(n >= 5, "expected the example configs, found {n}");
}

#[test]
fn mlp_example_is_the_builtin_default() {
    let file = spotrun::config::load(Some(&repo().join("configs/mlp.toml")), &[]).unwrap().config;
    let builtin = spotrun::config::load(None, &[]).unwrap().config;
    assert_eq!(spotrun::config::config_hash(&file).unwrap(), spotrun::config::config_hash(&builtin).unwrap());
}
