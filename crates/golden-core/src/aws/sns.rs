use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_sns::Client;

use crate::error::{AwsError, Result};
use crate::ports::Notifier;

/// [`Notifier`] on `aws-sdk-sns`, in the configuration's region (the stack's).
pub struct AwsSns {
    client: Client,
}

impl AwsSns {
    pub fn new(config: &SdkConfig) -> Self {
        Self {
            client: Client::new(config),
        }
    }

    /// A given client (unit tests with `aws-smithy-mocks`).
    pub fn from_client(client: Client) -> Self {
        Self { client }
    }
}

/// SNS refuses a subject over 100 characters or with a line break.
fn subject_line(subject: &str) -> String {
    let flat: String = subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    flat.chars().take(100).collect()
}

#[async_trait]
impl Notifier for AwsSns {
    async fn notify(&self, topic_arn: &str, subject: &str, message: &str) -> Result<()> {
        let region = self
            .client
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_default();
        self.client
            .publish()
            .topic_arn(topic_arn)
            .subject(subject_line(subject))
            .message(message)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("Publish", topic_arn, region, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_subject_is_one_line_of_at_most_100_characters() {
        let s = super::subject_line(&format!("a\nb{}", "x".repeat(200)));
        assert_eq!(s.chars().count(), 100);
        assert!(s.starts_with("a b"));
    }
}
