//! `provider = "microsoft365" | "gmail"`: the servers, the token and device endpoints and the
//! scope each provider uses for IMAP and SMTP, so that a config names only the mailbox, the
//! client and (Microsoft) the tenant. Keys written in the config win over these. Pure values.

use crate::config::Grant;

/// A provider whose defaults eingang knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Exchange Online (Microsoft 365), through the Microsoft identity platform.
    Microsoft365,
    /// Gmail and Google Workspace.
    Gmail,
}

impl Provider {
    /// The provider a config names.
    pub fn parse(name: &str) -> Option<Provider> {
        match name {
            "microsoft365" => Some(Provider::Microsoft365),
            "gmail" => Some(Provider::Gmail),
            _ => None,
        }
    }
}

/// Which login the defaults are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// An IMAP source.
    Imap,
    /// `[notify]`: SMTP submission.
    Smtp,
}

/// A provider's mail server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Its host name.
    pub host: &'static str,
    /// Its port.
    pub port: u16,
    /// The `tls` value for it.
    pub tls: &'static str,
}

/// What a provider fills in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// The mail server.
    pub server: Server,
    /// The token endpoint.
    pub token_url: String,
    /// The device authorization endpoint (RFC 8628).
    pub device_url: Option<String>,
    /// The scope for this protocol and grant.
    pub scope: &'static str,
}

/// The Microsoft identity platform's endpoints for a tenant (v2.0).
const MICROSOFT_LOGIN: &str = "https://login.microsoftonline.com";
/// Delegated access needs a tenant only to narrow who may sign in; "organizations" takes any
/// work or school account.
const MICROSOFT_DEFAULT_TENANT: &str = "organizations";
/// Exchange Online's delegated scopes, with `offline_access` for a refresh token.
const MICROSOFT_IMAP_DELEGATED: &str =
    "https://outlook.office365.com/IMAP.AccessAsUser.All offline_access";
const MICROSOFT_SMTP_DELEGATED: &str = "https://outlook.office365.com/SMTP.Send offline_access";
/// App-only access asks for the resource's application permissions as granted.
const MICROSOFT_APP_ONLY: &str = "https://outlook.office365.com/.default";
const GOOGLE_TOKEN: &str = "https://oauth2.googleapis.com/token";
const GOOGLE_DEVICE: &str = "https://oauth2.googleapis.com/device/code";
/// Google's one scope for IMAP and SMTP.
const GOOGLE_MAIL: &str = "https://mail.google.com/";

/// The defaults of `provider` for `protocol` and `grant`; `tenant` is Microsoft's directory
/// (a GUID or a verified domain).
pub fn defaults(
    provider: Provider,
    protocol: Protocol,
    grant: Grant,
    tenant: Option<&str>,
) -> Result<Defaults, String> {
    match provider {
        Provider::Microsoft365 => {
            let tenant = match (tenant, grant) {
                (Some(t), _) => t,
                (None, Grant::RefreshToken) => MICROSOFT_DEFAULT_TENANT,
                (None, Grant::ClientCredentials) => {
                    return Err("provider \"microsoft365\" with oauth_grant = \"client_credentials\" needs oauth_tenant: the directory (tenant) id or a verified domain".to_owned());
                }
            };
            if tenant.is_empty()
                || !tenant
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return Err(format!(
                    "oauth_tenant {tenant:?} is not a tenant id or domain"
                ));
            }
            let server = match protocol {
                Protocol::Imap => Server {
                    host: "outlook.office365.com",
                    port: 993,
                    tls: "implicit",
                },
                Protocol::Smtp => Server {
                    host: "smtp.office365.com",
                    port: 587,
                    tls: "starttls",
                },
            };
            let scope = match (protocol, grant) {
                (_, Grant::ClientCredentials) => MICROSOFT_APP_ONLY,
                (Protocol::Imap, Grant::RefreshToken) => MICROSOFT_IMAP_DELEGATED,
                (Protocol::Smtp, Grant::RefreshToken) => MICROSOFT_SMTP_DELEGATED,
            };
            Ok(Defaults {
                server,
                token_url: format!("{MICROSOFT_LOGIN}/{tenant}/oauth2/v2.0/token"),
                device_url: Some(format!("{MICROSOFT_LOGIN}/{tenant}/oauth2/v2.0/devicecode")),
                scope,
            })
        }
        Provider::Gmail => {
            if tenant.is_some() {
                return Err("`oauth_tenant` applies to provider \"microsoft365\" only".to_owned());
            }
            if grant == Grant::ClientCredentials {
                return Err("provider \"gmail\" has no client-credentials grant for mail (service accounts sign a JWT, which eingang does not do): use oauth_grant = \"refresh_token\"".to_owned());
            }
            let server = match protocol {
                Protocol::Imap => Server {
                    host: "imap.gmail.com",
                    port: 993,
                    tls: "implicit",
                },
                Protocol::Smtp => Server {
                    host: "smtp.gmail.com",
                    port: 587,
                    tls: "starttls",
                },
            };
            Ok(Defaults {
                server,
                token_url: GOOGLE_TOKEN.to_owned(),
                device_url: Some(GOOGLE_DEVICE.to_owned()),
                scope: GOOGLE_MAIL,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsoft_delegated_and_app_only_scopes_differ() {
        let imap = defaults(
            Provider::Microsoft365,
            Protocol::Imap,
            Grant::RefreshToken,
            None,
        )
        .unwrap();
        assert_eq!(imap.server.host, "outlook.office365.com");
        assert_eq!(
            imap.token_url,
            "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
        );
        assert_eq!(imap.scope, MICROSOFT_IMAP_DELEGATED);
        let app = defaults(
            Provider::Microsoft365,
            Protocol::Imap,
            Grant::ClientCredentials,
            Some("contoso.onmicrosoft.com"),
        )
        .unwrap();
        assert_eq!(app.scope, "https://outlook.office365.com/.default");
        assert!(app.token_url.contains("/contoso.onmicrosoft.com/"));
        let smtp = defaults(
            Provider::Microsoft365,
            Protocol::Smtp,
            Grant::RefreshToken,
            None,
        )
        .unwrap();
        assert_eq!(smtp.server.port, 587);
        assert!(
            smtp.scope
                .starts_with("https://outlook.office365.com/SMTP.Send")
        );
    }

    #[test]
    fn app_only_microsoft_needs_a_tenant_and_a_tenant_is_one_path_segment() {
        assert!(
            defaults(
                Provider::Microsoft365,
                Protocol::Imap,
                Grant::ClientCredentials,
                None
            )
            .is_err()
        );
        assert!(
            defaults(
                Provider::Microsoft365,
                Protocol::Imap,
                Grant::RefreshToken,
                Some("a/../b")
            )
            .is_err()
        );
    }

    #[test]
    fn gmail_has_one_scope_and_no_app_only_grant() {
        let g = defaults(Provider::Gmail, Protocol::Smtp, Grant::RefreshToken, None).unwrap();
        assert_eq!(g.scope, "https://mail.google.com/");
        assert_eq!(g.server.host, "smtp.gmail.com");
        assert!(
            defaults(
                Provider::Gmail,
                Protocol::Imap,
                Grant::ClientCredentials,
                None
            )
            .is_err()
        );
    }
}
