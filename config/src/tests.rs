//! Tests of the loader's layering, its rejection of unknown keys, and validation.

use std::io::Write;
use std::path::PathBuf;

use super::*;

const EXAMPLE: &str = include_str!("../quiver.example.toml");

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("quiver.example.toml")
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn parse_message(result: Result<Config, ConfigError>) -> String {
    match result {
        Err(ConfigError::Parse(message)) => message,
        other => panic!("expected a parse error, got {other:?}"),
    }
}

fn problems(result: Result<(), ConfigError>) -> Vec<String> {
    match result {
        Err(ConfigError::Invalid(problems)) => problems,
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn defaults_are_valid_and_as_documented() {
    let config = Config::default();
    config.validate().unwrap();
    assert_eq!(config.node.data_dir, PathBuf::from("./quiver-data"));
    assert_eq!(config.node.listen, "127.0.0.1:6334".parse().unwrap());
    assert_eq!(config.limits.max_request_bytes, 64 << 20);
    assert_eq!(config.search.default_ef, 64);
    assert!(config.storage.sync_writes);
    assert_eq!(config.log.level, "info");
}

#[test]
fn example_file_equals_defaults() {
    assert_eq!(Config::from_toml_str(EXAMPLE).unwrap(), Config::default());
    let loaded = Config::load_from(Some(&example_path()), Vec::new()).unwrap();
    assert_eq!(loaded, Config::default());
}

#[test]
fn example_file_sets_every_key() {
    // Every key of the default config, serialized, must appear as `key = ` in the example.
    let value = figment::value::Value::serialize(Config::default()).unwrap();
    let sections = value.into_dict().unwrap();
    for (section, keys) in sections {
        assert!(
            EXAMPLE.contains(&format!("[{section}]\n")),
            "example lacks [{section}]"
        );
        for key in keys.into_dict().unwrap().keys() {
            assert!(
                EXAMPLE.contains(&format!("\n{key} = ")),
                "example lacks {section}.{key}"
            );
        }
    }
}

#[test]
fn empty_input_gives_defaults() {
    assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    assert_eq!(
        Config::load_from(None, Vec::new()).unwrap(),
        Config::default()
    );
}

#[test]
fn partial_toml_overrides_only_what_it_says() {
    let config = Config::from_toml_str(
        r#"
        [limits]
        max_batch_points = 500

        [log]
        level = "info,quiver_node=debug"
        "#,
    )
    .unwrap();
    let mut expected = Config::default();
    expected.limits.max_batch_points = 500;
    expected.log.level = "info,quiver_node=debug".to_owned();
    assert_eq!(config, expected);
}

#[test]
fn env_overrides_win_over_file() {
    let file = toml_file(
        r#"
        [node]
        data_dir = "/from/file"
        listen = "0.0.0.0:9000"
        [limits]
        max_batch_points = 200
        max_top_k = 300
        "#,
    );
    let config = Config::load_from(
        Some(file.path()),
        vars(&[
            ("QUIVER_LIMITS__MAX_BATCH_POINTS", "500"),
            ("QUIVER_NODE__LISTEN", "127.0.0.1:7000"),
            ("QUIVER_STORAGE__SYNC_WRITES", "false"),
            ("QUIVER_LOG__LEVEL", "info,quiver_node=debug"),
        ]),
    )
    .unwrap();
    let mut expected = Config::default();
    expected.node.data_dir = PathBuf::from("/from/file");
    expected.node.listen = "127.0.0.1:7000".parse().unwrap();
    expected.limits.max_batch_points = 500;
    expected.limits.max_top_k = 300;
    expected.storage.sync_writes = false;
    expected.log.level = "info,quiver_node=debug".to_owned();
    assert_eq!(config, expected);
}

#[test]
fn env_keys_are_case_insensitive_and_other_vars_ignored() {
    let config = Config::load_from(
        None,
        vars(&[
            ("QUIVER_search__Default_Ef", "32"),
            ("QUIVER_ENDPOINT", "http://127.0.0.1:6334"),
            ("PATH", "/usr/bin"),
            ("quiver_limits__bogus", "1"),
        ]),
    )
    .unwrap();
    let mut expected = Config::default();
    expected.search.default_ef = 32;
    assert_eq!(config, expected);
}

#[test]
fn quoted_env_value_stays_a_string() {
    let config = Config::load_from(None, vars(&[("QUIVER_NODE__DATA_DIR", "\"42\"")])).unwrap();
    assert_eq!(config.node.data_dir, PathBuf::from("42"));
}

#[test]
fn unknown_env_key_is_an_error_naming_it() {
    let message = parse_message(Config::load_from(
        None,
        vars(&[("QUIVER_LIMITS__MAX_BATCH_POINTZ", "1")]),
    ));
    assert!(message.contains("max_batch_pointz"), "{message}");
    assert!(
        message.contains("for key \"QUIVER_LIMITS__MAX_BATCH_POINTZ\""),
        "{message}"
    );

    let message = parse_message(Config::load_from(None, vars(&[("QUIVER_BOGUS", "1")])));
    assert!(message.contains("bogus"), "{message}");

    let message = parse_message(Config::load_from(
        None,
        vars(&[("QUIVER_NOPE__LEVEL", "debug")]),
    ));
    assert!(message.contains("nope"), "{message}");
}

#[test]
fn malformed_env_names_are_errors() {
    let message = parse_message(Config::load_from(None, vars(&[("QUIVER_LIMITS__", "1")])));
    assert!(message.contains("QUIVER_LIMITS__"), "{message}");

    let message = parse_message(Config::load_from(
        None,
        vars(&[("QUIVER_LOG", "x"), ("QUIVER_LOG__LEVEL", "debug")]),
    ));
    assert!(message.contains("QUIVER_LOG__LEVEL"), "{message}");
}

#[test]
fn env_value_of_wrong_type_names_the_variable() {
    let message = parse_message(Config::load_from(
        None,
        vars(&[("QUIVER_LIMITS__MAX_TOP_K", "lots")]),
    ));
    assert!(message.contains("QUIVER_LIMITS__MAX_TOP_K"), "{message}");
}

#[test]
fn unknown_file_keys_are_errors_naming_them() {
    let message = parse_message(Config::from_toml_str("[limits]\nmax_batch_pointz = 1\n"));
    assert!(message.contains("max_batch_pointz"), "{message}");
    assert!(
        message.contains("for key \"limits.max_batch_pointz\""),
        "{message}"
    );

    let message = parse_message(Config::from_toml_str("[limitz]\nmax_batch_points = 1\n"));
    assert!(message.contains("limitz"), "{message}");

    let message = parse_message(Config::from_toml_str("verbose = true\n"));
    assert!(message.contains("verbose"), "{message}");

    let file = toml_file("[storage]\nsync = false\n");
    let message = parse_message(Config::load_from(Some(file.path()), Vec::new()));
    assert!(message.contains("for key \"storage.sync\""), "{message}");
    assert!(
        message.contains(&file.path().display().to_string()),
        "{message}"
    );
}

#[test]
fn wrong_types_and_bad_toml_are_parse_errors() {
    let message = parse_message(Config::from_toml_str("[limits]\nmax_top_k = \"10\"\n"));
    assert!(
        message.contains("for key \"limits.max_top_k\""),
        "{message}"
    );

    let message = parse_message(Config::from_toml_str("[node]\nlisten = \"localhost\"\n"));
    assert!(message.contains("listen"), "{message}");

    let message = parse_message(Config::from_toml_str("[limits]\nmax_top_k = -1\n"));
    assert!(message.contains("max_top_k"), "{message}");

    parse_message(Config::from_toml_str("[limits\n"));
}

#[test]
fn validation_reports_every_problem_at_once() {
    let mut config = Config::default();
    config.node.data_dir = PathBuf::new();
    config.limits.max_batch_points = 0;
    config.limits.max_request_bytes = 100;
    config.limits.max_dimension = 100_000;
    config.search.default_ef = 5_000;
    config.storage.segment_seal_points = 0;
    config.log.level = "  ".to_owned();
    let problems = problems(config.validate());
    assert_eq!(
        problems,
        [
            "- node.data_dir: must not be empty",
            "- limits.max_request_bytes: must be at least 1024",
            "- limits.max_batch_points: must be at least 1",
            "- limits.max_dimension: must be at most 65536",
            "- search.default_ef: must be at most search.max_ef (4096)",
            "- storage.segment_seal_points: must be at least 1",
            "- log.level: must not be empty",
        ]
    );
    let message = ConfigError::Invalid(problems).to_string();
    assert!(message.starts_with("invalid configuration:\n- node.data_dir: "));
    assert_eq!(message.lines().count(), 8);
}

#[test]
fn peer_routes_must_be_addresses() {
    let loaded = Config::from_toml_str(
        "[cluster]\npeer_routes = { \"127.0.0.1:7001\" = \"127.0.0.1:9001\", \"node-b\" = \"127.0.0.1:9002\" }\n",
    );
    assert_eq!(
        problems(loaded.map(|_| ())),
        ["- cluster.peer_routes: `node-b` is not an ip:port address"]
    );
}

#[test]
fn every_limit_must_be_at_least_one() {
    let config = Config {
        limits: LimitsConfig {
            max_request_bytes: 0,
            max_batch_points: 0,
            max_dimension: 0,
            max_payload_bytes: 0,
            max_top_k: 0,
            max_scroll_limit: 0,
            max_ids_per_request: 0,
        },
        search: SearchConfig {
            exact_search_threshold: 0,
            default_ef: 0,
            max_ef: 0,
        },
        storage: StorageConfig {
            sync_writes: false,
            segment_seal_points: 0,
            segment_max_points: 0,
            index_build_threads: 0,
            segment_idle_seal_ms: 0,
            block_cache_mb: 0,
            write_buffer_mb: 0,
            text_commit_ms: 0,
        },
        ..Config::default()
    };
    let problems = problems(config.validate());
    for key in [
        "limits.max_request_bytes",
        "limits.max_batch_points",
        "limits.max_dimension",
        "limits.max_payload_bytes",
        "limits.max_top_k",
        "limits.max_scroll_limit",
        "limits.max_ids_per_request",
        "search.default_ef",
        "search.max_ef",
        "storage.segment_seal_points",
        "storage.segment_max_points",
        "storage.block_cache_mb",
        "storage.write_buffer_mb",
        "storage.text_commit_ms",
    ] {
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&format!("- {key}: "))),
            "{key} not reported in {problems:?}"
        );
    }
    assert!(!problems
        .iter()
        .any(|p| p.contains("exact_search_threshold")));
}

#[test]
fn loaders_validate() {
    let result = Config::from_toml_str("[search]\ndefault_ef = 10\nmax_ef = 5\n");
    assert!(matches!(result, Err(ConfigError::Invalid(_))), "{result:?}");

    let result = Config::load_from(None, vars(&[("QUIVER_LIMITS__MAX_TOP_K", "0")]));
    match result {
        Err(ConfigError::Invalid(problems)) => {
            assert_eq!(problems, ["- limits.max_top_k: must be at least 1"])
        }
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn missing_file_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    match Config::load_from(Some(&path), Vec::new()) {
        Err(ConfigError::Read { path: p, source }) => {
            assert_eq!(p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected a read error, got {other:?}"),
    }
    let message = Config::load(Some(&path)).unwrap_err().to_string();
    assert!(message.starts_with("cannot read config file "), "{message}");
    assert!(message.contains("nope.toml"), "{message}");
}

#[test]
// `Jail::expect_with` fixes the closure's error type to figment's (large) `Error`.
#[allow(clippy::result_large_err)]
fn load_reads_the_process_environment() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "quiver.toml",
            "[limits]\nmax_top_k = 7\nmax_batch_points = 8\n",
        )?;
        jail.set_env("QUIVER_LIMITS__MAX_BATCH_POINTS", "9");
        jail.set_env("QUIVER_ENDPOINT", "http://127.0.0.1:6334");
        let config = Config::load(Some(Path::new("quiver.toml"))).unwrap();
        assert_eq!(config.limits.max_top_k, 7);
        assert_eq!(config.limits.max_batch_points, 9);

        jail.set_env("QUIVER_LIMITS__MAX_BATCH_POINTZ", "1");
        let message = parse_message(Config::load(None));
        assert!(message.contains("max_batch_pointz"), "{message}");
        Ok(())
    });
}
