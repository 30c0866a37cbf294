//! `rafter token create|list|delete`: bootstrap tokens in kubeadm's format
//! (`[a-z0-9]{6}.[a-z0-9]{16}`), with which node agents join
//! (`rafter agent --token`). A token is a Secret
//! `rafter-system/bootstrap-token-<id>` holding its secret and expiry; the
//! token cleaner controller deletes it once expired.

use std::time::{Duration, SystemTime};

use rafter_apiserver::auth::{generate_bootstrap_token, parse_bootstrap_token};
use rafter_apiserver::node_auth::{
    BOOTSTRAP_TOKEN_TYPE, SYSTEM_NAMESPACE, bootstrap_secret_name, expiration,
};
use rafter_client::{Client, DeleteOptions};
use rafter_proto::age::{format_rfc3339_utc, human_duration};
use rafter_proto::api;
use rafter_proto::object::Object;

use super::GlobalArgs;
use super::objects::server_error;
use super::output::Table;

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a bootstrap token and print it.
    Create {
        /// How long the token is valid (e.g. 30m, 24h, 7d; 0: never expires).
        #[arg(long, default_value = "24h", value_parser = crate::cli::duration::parse_duration)]
        ttl: Duration,
        /// A note shown by `token list`.
        #[arg(long, default_value = "")]
        description: String,
        /// Print the whole `rafter agent` command a node runs to join.
        #[arg(long)]
        print_join_command: bool,
    },
    /// List the bootstrap tokens.
    List,
    /// Delete bootstrap tokens by id or whole token.
    Delete {
        #[arg(required = true)]
        tokens: Vec<String>,
    },
}

pub async fn run(global: &GlobalArgs, command: TokenCommand) -> anyhow::Result<()> {
    let client = global.client().await?;
    match command {
        TokenCommand::Create {
            ttl,
            description,
            print_join_command,
        } => create(&client, ttl, &description, print_join_command).await,
        TokenCommand::List => list(&client).await,
        TokenCommand::Delete { tokens } => delete(&client, &tokens).await,
    }
}

/// The Secret of a new token.
pub(crate) fn token_secret(
    id: &str,
    secret: &str,
    ttl: Duration,
    description: &str,
) -> api::Secret {
    let mut s = api::Secret {
        r#type: BOOTSTRAP_TOKEN_TYPE.into(),
        ..Default::default()
    };
    s.data.insert("token-id".into(), id.as_bytes().to_vec());
    s.data
        .insert("token-secret".into(), secret.as_bytes().to_vec());
    if !ttl.is_zero() {
        let at = format_rfc3339_utc(SystemTime::now() + ttl);
        s.data.insert("expiration".into(), at.into_bytes());
    }
    if !description.is_empty() {
        s.data
            .insert("description".into(), description.as_bytes().to_vec());
    }
    let m = s.metadata_mut();
    m.name = bootstrap_secret_name(id);
    m.namespace = SYSTEM_NAMESPACE.into();
    s
}

/// Stores a token Secret. A cluster that has just started may not have
/// created `rafter-system` yet (every master does so at start-up): that
/// NotFound is waited out for a few seconds.
pub(crate) async fn store_token(client: &Client, secret: &api::Secret) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client.create(secret).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_reason("NotFound") && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(server_error(e)),
        }
    }
}

async fn create(
    client: &Client,
    ttl: Duration,
    description: &str,
    print_join_command: bool,
) -> anyhow::Result<()> {
    let (id, secret) = generate_bootstrap_token();
    store_token(client, &token_secret(&id, &secret, ttl, description)).await?;
    let token = format!("{id}.{secret}");
    if print_join_command {
        let masters: Vec<String> = client
            .member_list()
            .await?
            .members
            .into_iter()
            .map(|m| m.address)
            .collect();
        outln!(
            "rafter agent --server {} --token {token} --name <NODE-NAME> --data-dir /var/lib/rafter-agent",
            masters.join(",")
        )?;
    } else {
        outln!("{token}")?;
    }
    Ok(())
}

async fn list(client: &Client) -> anyhow::Result<()> {
    let secrets = client
        .list::<api::Secret>(SYSTEM_NAMESPACE, "", "")
        .await
        .map_err(server_error)?;
    let now = SystemTime::now();
    let mut table = Table::new(&["TOKEN", "TTL", "EXPIRES", "DESCRIPTION"]);
    for s in secrets
        .items
        .iter()
        .filter(|s| s.r#type == BOOTSTRAP_TOKEN_TYPE)
    {
        let field = |k: &str| {
            String::from_utf8_lossy(s.data.get(k).map(Vec::as_slice).unwrap_or_default())
                .into_owned()
        };
        let (ttl, expires) = match expiration(s) {
            Some(at) => (
                match at.duration_since(now) {
                    Ok(left) => human_duration(left),
                    Err(_) => "<expired>".into(),
                },
                format_rfc3339_utc(at),
            ),
            None => ("<forever>".into(), "<never>".into()),
        };
        let description = match field("description") {
            d if d.is_empty() => "<none>".to_string(),
            d => d,
        };
        table.row(vec![
            format!("{}.{}", field("token-id"), field("token-secret")),
            ttl,
            expires,
            description,
        ]);
    }
    if table.is_empty() {
        outln!("No bootstrap tokens.")?;
        return Ok(());
    }
    table.print()?;
    Ok(())
}

/// The token id named by `arg`: an id or a whole token.
fn token_id(arg: &str) -> anyhow::Result<&str> {
    if let Some((id, _)) = parse_bootstrap_token(arg) {
        return Ok(id);
    }
    if arg.len() == 6
        && arg
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Ok(arg);
    }
    anyhow::bail!(
        "{arg:?} is neither a token id ([a-z0-9]{{6}}) nor a token ([a-z0-9]{{6}}.[a-z0-9]{{16}}); see `rafter token list`"
    )
}

async fn delete(client: &Client, tokens: &[String]) -> anyhow::Result<()> {
    for arg in tokens {
        let id = token_id(arg)?;
        client
            .delete_object::<api::Secret>(
                SYSTEM_NAMESPACE,
                &bootstrap_secret_name(id),
                &DeleteOptions::default(),
            )
            .await
            .map_err(|e| {
                if e.is_reason("NotFound") {
                    anyhow::anyhow!("bootstrap token {id:?} not found; see `rafter token list`")
                } else {
                    server_error(e)
                }
            })?;
        outln!("bootstrap token {id:?} deleted")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_secret_holds_id_secret_and_expiry() {
        let s = token_secret("abcdef", "0123456789abcdef", Duration::from_secs(3600), "");
        assert_eq!(s.metadata().name, "bootstrap-token-abcdef");
        assert_eq!(s.data["token-secret"], b"0123456789abcdef");
        let left = expiration(&s)
            .unwrap()
            .duration_since(SystemTime::now())
            .unwrap();
        assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3600));
        assert!(expiration(&token_secret("abcdef", "x", Duration::ZERO, "")).is_none());
    }

    #[test]
    fn tokens_are_named_by_id_or_whole() {
        assert_eq!(token_id("abcdef").unwrap(), "abcdef");
        assert_eq!(token_id("abcdef.0123456789abcdef").unwrap(), "abcdef");
        assert!(token_id("ABCDEF").is_err());
        assert!(token_id("abc").is_err());
    }
}
