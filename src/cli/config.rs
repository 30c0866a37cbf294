//! Where the CLI finds the masters: `--endpoints`, then `$RAFTER_ENDPOINTS`,
//! then the client config file.
//!
//! The config file is `$RAFTER_CONFIG` when that is set, else
//! `~/.rafter/config`. It is plain text, one `key = value` setting per line;
//! blank lines and lines starting with `#` are ignored, unknown keys are
//! ignored with a warning (so newer files work with older binaries). The only
//! setting so far:
//!
//! ```text
//! # Rafter client configuration
//! endpoints = 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
//! ```
//!
//! `rafter local up` writes this file.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Environment variable holding comma-separated endpoints.
pub const ENDPOINTS_ENV: &str = "RAFTER_ENDPOINTS";
/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "RAFTER_CONFIG";

/// The client settings a config file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientConfig {
    /// Master endpoints, `host:port`.
    pub endpoints: Vec<String>,
    /// The bearer token requests carry.
    pub token: Option<String>,
    /// The namespace commands use without -n.
    pub namespace: Option<String>,
}

impl ClientConfig {
    /// Parses the text of a config file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<ClientConfig> {
        let mut config = ClientConfig::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                bail!(
                    "{}, line {}: expected `key = value`, found {line:?}",
                    origin.display(),
                    n + 1
                );
            };
            match key.trim() {
                "endpoints" => config.endpoints = split_endpoints(value),
                "token" => config.token = Some(value.trim().to_string()).filter(|t| !t.is_empty()),
                "namespace" => {
                    config.namespace = Some(value.trim().to_string()).filter(|t| !t.is_empty())
                }
                other => tracing::warn!(
                    file = %origin.display(),
                    line = n + 1,
                    "ignoring unknown setting {other:?}"
                ),
            }
        }
        Ok(config)
    }

    /// The config as file text.
    pub fn render(&self) -> String {
        let mut text = format!(
            "# Rafter client configuration (see `rafter --help`).\n\
             # endpoints: the masters to talk to, comma-separated host:port.\n\
             endpoints = {}\n",
            self.endpoints.join(",")
        );
        if let Some(t) = &self.token {
            text.push_str(&format!(
                "# token: the cluster's admin bearer token.\ntoken = {t}\n"
            ));
        }
        if let Some(ns) = &self.namespace {
            text.push_str(&format!(
                "# namespace: used when a command has no -n.\nnamespace = {ns}\n"
            ));
        }
        text
    }

    /// Writes the config to `path`, creating its directory.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating directory {}", dir.display()))?;
        }
        std::fs::write(path, self.render())
            .with_context(|| format!("writing client config {}", path.display()))
    }
}

/// Splits `a, b,c` into endpoints, dropping empty entries.
pub fn split_endpoints(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The config file's path: `$RAFTER_CONFIG`, else `~/.rafter/config`.
pub fn config_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::home_dir()
        .filter(|h| !h.as_os_str().is_empty())
        .context("cannot find the home directory for ~/.rafter/config; set RAFTER_CONFIG")?;
    Ok(home.join(".rafter").join("config"))
}

/// The endpoints to use: the `--endpoints` flag, else `$RAFTER_ENDPOINTS`,
/// else the config file. Fails naming all three places when none has any.
pub const TOKEN_ENV: &str = "RAFTER_TOKEN";

/// The config file's settings, or the defaults when it does not exist.
pub fn read_config() -> anyhow::Result<ClientConfig> {
    let path = config_path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => ClientConfig::parse(&text, &path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
        Err(e) => Err(e).with_context(|| format!("reading client config {}", path.display())),
    }
}

/// The token: --token, else $RAFTER_TOKEN, else the config file's `token`.
pub fn resolve_token(flag: Option<&str>) -> anyhow::Result<Option<String>> {
    if let Some(t) = flag.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(Some(t.to_string()));
    }
    if let Ok(t) = std::env::var(TOKEN_ENV)
        && !t.trim().is_empty()
    {
        return Ok(Some(t.trim().to_string()));
    }
    Ok(read_config()?.token)
}

/// The namespace: -n, else the config file's `namespace`, else "default".
pub fn resolve_namespace(flag: Option<&str>) -> anyhow::Result<String> {
    if let Some(ns) = flag.filter(|n| !n.is_empty()) {
        return Ok(ns.to_string());
    }
    Ok(read_config()?.namespace.unwrap_or_else(|| "default".into()))
}

pub fn resolve_endpoints(flag: Option<&str>) -> anyhow::Result<Vec<String>> {
    if let Some(flag) = flag {
        let endpoints = split_endpoints(flag);
        if endpoints.is_empty() {
            bail!("--endpoints is empty: give masters as host:port,host:port,...");
        }
        return Ok(endpoints);
    }
    if let Ok(env) = std::env::var(ENDPOINTS_ENV) {
        let endpoints = split_endpoints(&env);
        if !endpoints.is_empty() {
            return Ok(endpoints);
        }
    }
    let path = config_path()?;
    let file_state = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let config = ClientConfig::parse(&text, &path)?;
            if !config.endpoints.is_empty() {
                return Ok(config.endpoints);
            }
            "has no endpoints"
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist",
        Err(e) => {
            return Err(e).with_context(|| format!("reading client config {}", path.display()));
        }
    };
    bail!(
        "no masters to talk to: looked at the --endpoints flag, ${ENDPOINTS_ENV}, and the \
         config file {} (which {file_state}). Pass --endpoints host:port,..., set \
         {ENDPOINTS_ENV}, or start a local cluster with `rafter local up`, which writes the \
         config file",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips() {
        let config = ClientConfig {
            endpoints: vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into()],
            token: Some("t0ken".into()),
            namespace: Some("web".into()),
        };
        let parsed = ClientConfig::parse(&config.render(), Path::new("c")).unwrap();
        assert_eq!(parsed, config);
    }

    #[test]
    fn config_ignores_comments_and_blank_lines() {
        let text = "# hi\n\n  endpoints =  a:1 , b:2,\nfuture = x\n";
        let parsed = ClientConfig::parse(text, Path::new("c")).unwrap();
        assert_eq!(parsed.endpoints, ["a:1", "b:2"]);
    }

    #[test]
    fn malformed_config_line_names_file_and_line() {
        let err = ClientConfig::parse("endpoints = a:1\nbogus\n", Path::new("/x/config"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/x/config, line 2"), "{err}");
    }

    #[test]
    fn flag_wins() {
        assert_eq!(resolve_endpoints(Some("a:1,b:2")).unwrap(), ["a:1", "b:2"]);
        assert!(resolve_endpoints(Some(" , ")).is_err());
    }
}
