//! Static bearer tokens from `--token-auth-file`: CSV lines `token,user,uid` with an
//! optional fourth column of comma separated groups (quoted, as CSV requires).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use http::request::Parts;

use super::{Authenticate, Outcome, bearer_token, parse};
use crate::auth::request::UserInfo;

pub struct TokenFile {
    users: HashMap<String, UserInfo>,
}

impl TokenFile {
    pub fn load(path: &Path) -> anyhow::Result<TokenFile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        TokenFile::parse(&text).with_context(|| format!("token file {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<TokenFile> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let record = parse::csv_fields(line).map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?;
            anyhow::ensure!(
                record.len() >= 3,
                "line {}: needs at least 3 columns (token, user name, uid), found {}",
                n + 1,
                record.len()
            );
            if record[0].is_empty() {
                tracing::warn!(line = n + 1, "skipping an empty token in the token file");
                continue;
            }
            let groups = record.get(3).map(|g| split_groups(g)).unwrap_or_default();
            let user = UserInfo { name: record[1].clone(), uid: record[2].clone(), groups, ..Default::default() };
            if users.insert(record[0].clone(), user).is_some() {
                tracing::warn!(line = n + 1, "duplicate token in the token file; the later line wins");
            }
        }
        Ok(TokenFile { users })
    }
}

impl Authenticate for TokenFile {
    fn authenticate(&self, req: &Parts) -> Outcome {
        let Some(token) = bearer_token(&req.headers) else {
            return Outcome::NoCredentials;
        };
        match self.users.get(token) {
            Some(user) => Outcome::Authenticated(user.clone()),
            None => Outcome::Rejected("unknown bearer token".into()),
        }
    }
}

fn split_groups(field: &str) -> Vec<String> {
    field.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_csv_lines() {
        let file =
            TokenFile::parse("t1,alice,1,\"devs,ops\"\n\n t2, bob ,2\n\"t,3\",carol,3,\"a \"\"q\"\"\"\n").unwrap();
        assert_eq!(file.users["t1"].groups, ["devs", "ops"]);
        assert_eq!((file.users["t2"].name.as_str(), file.users["t2"].groups.len()), ("bob ", 0));
        assert_eq!(file.users["t,3"].groups, ["a \"q\""]);
        assert!(TokenFile::parse("t1,alice\n").is_err(), "two columns");
        assert!(TokenFile::parse("t1,alice,1,\"devs\n").is_err(), "unterminated quote");
    }
}
