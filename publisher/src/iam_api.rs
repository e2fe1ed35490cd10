//! A small client of the AWS IAM Query API: the three calls `enroll` makes to give a
//! host its own scoped credentials (CreateUser, PutUserPolicy, CreateAccessKey).
//!
//! AWS IAM, SeaweedFS (on its S3 port) and moto speak it: a form-encoded POST of
//! `Action=…&Version=2010-05-08&…` signed with SigV4 for service `iam`, answered in
//! XML. Requests are signed with `object_store`'s `AwsAuthorizer` and sent with its
//! HTTP client: the signer and client fleet already uses for every S3 request, so
//! this needs no SDK and no second signer (see the commit that added it for why not
//! `aws-sigv4`). Only the elements read here are looked at in the answers.

use fleet_core::S3Credentials;
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::{ClientOptions, HttpClient, HttpConnector, ReqwestConnector};

/// The IAM API's version, sent with every call.
const API_VERSION: &str = "2010-05-08";
/// The global AWS IAM endpoint (signed for `us-east-1`).
pub const AWS_IAM_ENDPOINT: &str = "https://iam.amazonaws.com/";

/// Why an IAM call failed.
#[derive(Debug, thiserror::Error)]
pub enum IamApiError {
    /// The client could not be built.
    #[error("cannot set up an HTTP client for the IAM API at {endpoint}: {error}")]
    Client {
        /// The endpoint.
        endpoint: String,
        /// The error.
        error: String,
    },
    /// The request did not get an answer.
    #[error("IAM {action} at {endpoint} failed: {error}")]
    Http {
        /// The IAM action.
        action: &'static str,
        /// The endpoint.
        endpoint: String,
        /// The transport error.
        error: String,
    },
    /// The server answered with an error.
    #[error("IAM {action} at {endpoint} was refused: HTTP {status} {code}: {message}")]
    Api {
        /// The IAM action.
        action: &'static str,
        /// The endpoint.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The IAM error code, such as `AccessDenied` or `EntityAlreadyExists`.
        code: String,
        /// The server's message.
        message: String,
    },
    /// A successful answer lacks what it should hold.
    #[error("IAM {action} at {endpoint} answered without {what}")]
    Malformed {
        /// The IAM action.
        action: &'static str,
        /// The endpoint.
        endpoint: String,
        /// The missing element.
        what: &'static str,
    },
}

/// An access key made by CreateAccessKey.
#[derive(Clone)]
pub struct AccessKey {
    /// The access key id.
    pub id: String,
    /// The secret access key.
    pub secret: String,
}

/// A client of one IAM endpoint with one set of (admin) credentials.
pub struct IamApi {
    endpoint: String,
    region: String,
    credential: AwsCredential,
    client: HttpClient,
}

impl IamApi {
    /// A client of `endpoint` (AWS: [`AWS_IAM_ENDPOINT`]), signing for `region`.
    pub fn new(endpoint: &str, region: &str, creds: &S3Credentials) -> Result<Self, IamApiError> {
        let options = ClientOptions::new()
            .with_allow_http(true)
            .with_timeout(std::time::Duration::from_secs(30));
        let client =
            ReqwestConnector::default()
                .connect(&options)
                .map_err(|e| IamApiError::Client {
                    endpoint: endpoint.to_owned(),
                    error: e.to_string(),
                })?;
        Ok(Self {
            endpoint: endpoint.to_owned(),
            region: region.to_owned(),
            credential: AwsCredential {
                key_id: creds.access_key_id.clone(),
                secret_key: creds.secret_access_key.clone(),
                token: creds.session_token.clone(),
            },
            client,
        })
    }

    /// CreateUser; `Ok(false)` when the user exists already (re-enrolling a host).
    pub async fn create_user(&self, user: &str) -> Result<bool, IamApiError> {
        match self.call("CreateUser", &[("UserName", user)]).await {
            Ok(_) => Ok(true),
            Err(IamApiError::Api { code, .. }) if code == "EntityAlreadyExists" => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// PutUserPolicy: sets the user's inline policy `name` to `document`.
    pub async fn put_user_policy(
        &self,
        user: &str,
        name: &str,
        document: &str,
    ) -> Result<(), IamApiError> {
        self.call(
            "PutUserPolicy",
            &[
                ("UserName", user),
                ("PolicyName", name),
                ("PolicyDocument", document),
            ],
        )
        .await
        .map(drop)
    }

    /// CreateAccessKey: a new access key of `user`.
    pub async fn create_access_key(&self, user: &str) -> Result<AccessKey, IamApiError> {
        const ACTION: &str = "CreateAccessKey";
        let xml = self.call(ACTION, &[("UserName", user)]).await?;
        let get = |what: &'static str| {
            element(&xml, what).ok_or_else(|| IamApiError::Malformed {
                action: ACTION,
                endpoint: self.endpoint.clone(),
                what,
            })
        };
        Ok(AccessKey {
            id: get("AccessKeyId")?,
            secret: get("SecretAccessKey")?,
        })
    }

    /// Sends one signed call; the answer's XML on success.
    async fn call(
        &self,
        action: &'static str,
        params: &[(&str, &str)],
    ) -> Result<String, IamApiError> {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("Action", action)
            .append_pair("Version", API_VERSION);
        for (k, v) in params {
            form.append_pair(k, v);
        }
        let http_err = |error: String| IamApiError::Http {
            action,
            endpoint: self.endpoint.clone(),
            error,
        };
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(&self.endpoint)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(form.finish().into())
            .map_err(|e| http_err(e.to_string()))?;
        AwsAuthorizer::new(&self.credential, "iam", &self.region)
            .try_authorize(&mut req, None)
            .map_err(|e| http_err(e.to_string()))?;
        let resp = self
            .client
            .execute(req)
            .await
            .map_err(|e| http_err(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .bytes()
            .await
            .map_err(|e| http_err(e.to_string()))?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if status.is_success() {
            return Ok(text);
        }
        Err(IamApiError::Api {
            action,
            endpoint: self.endpoint.clone(),
            status: status.as_u16(),
            code: element(&text, "Code").unwrap_or_default(),
            message: element(&text, "Message").unwrap_or_else(|| text.chars().take(300).collect()),
        })
    }
}

/// The text of the first `<name>…</name>` element in `xml`, unescaped.
fn element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_found_and_unescaped() {
        let xml = "<CreateAccessKeyResponse><CreateAccessKeyResult><AccessKey>\
                   <AccessKeyId>AKID</AccessKeyId><SecretAccessKey>a&amp;b/c+d</SecretAccessKey>\
                   </AccessKey></CreateAccessKeyResult></CreateAccessKeyResponse>";
        assert_eq!(element(xml, "AccessKeyId").as_deref(), Some("AKID"));
        assert_eq!(element(xml, "SecretAccessKey").as_deref(), Some("a&b/c+d"));
        assert_eq!(element(xml, "Code"), None);
    }
}
