//! `--use-service-account-credentials`: each controller writes as its own service
//! account in kube-system (`system:serviceaccount:kube-system:replicaset-controller`
//! ...), bound by the bootstrap policy to its `system:controller:*` role, as upstream's
//! controller-manager does. The process's own identity (system:kube-controller-manager)
//! creates the accounts and requests their tokens (TokenRequest, one hour, renewed
//! every twenty minutes into files the clients re-read).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::config::AuthInfo;
use kube::{Api, Client, Config};

use super::runtime::is_conflict;

const TOKEN_SECONDS: i64 = 3600;
const RENEW_EVERY: Duration = Duration::from_secs(20 * 60);

pub struct Credentials {
    base: Config,
    admin: Client,
    dir: PathBuf,
}

impl Credentials {
    pub fn new(base: Config, admin: Client) -> anyhow::Result<Credentials> {
        let dir = std::env::temp_dir().join(format!("ferrokube-controller-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Credentials { base, admin, dir })
    }

    /// A client acting as `kube-system/<account>`, its token kept fresh in the background.
    pub async fn client_for(&self, account: &'static str) -> anyhow::Result<Client> {
        let file = self.dir.join(format!("{account}.token"));
        write_token(&self.admin, account, &file).await?;
        let (admin, renew) = (self.admin.clone(), file.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                if let Err(e) = write_token(&admin, account, &renew).await {
                    tracing::warn!(account, error = %format!("{e:#}"), "renewing a controller's token");
                }
            }
        });
        let mut config = self.base.clone();
        config.auth_info = AuthInfo { token_file: Some(file.display().to_string()), ..Default::default() };
        super::runtime::client::counting_client(config)
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn write_token(admin: &Client, account: &str, file: &std::path::Path) -> anyhow::Result<()> {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "kube-system");
    let sa = ServiceAccount {
        metadata: ObjectMeta { name: Some(account.to_string()), ..Default::default() },
        ..Default::default()
    };
    match accounts.create(&PostParams::default(), &sa).await {
        Ok(_) => {}
        Err(e) if is_conflict(&e) => {}
        Err(e) => return Err(e).with_context(|| format!("creating the service account {account}")),
    }
    let request = TokenRequest {
        metadata: ObjectMeta::default(),
        spec: TokenRequestSpec { expiration_seconds: Some(TOKEN_SECONDS), ..Default::default() },
        status: None,
    };
    let issued: TokenRequest = accounts
        .create_subresource("token", account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token for {account}"))?;
    let token = issued.status.map(|s| s.token).unwrap_or_default();
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, token)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}
