use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_scheduler::types::ScheduleState;
use aws_sdk_scheduler::Client;

use super::to_chrono;
use crate::error::{unless_not_found, AwsError, Error, Result};
use crate::ports::{BakeSchedule, Schedules};

/// [`Schedules`] on `aws-sdk-scheduler`, in the configuration's region (the stack's).
pub struct AwsScheduler {
    client: Client,
}

impl AwsScheduler {
    pub fn new(config: &SdkConfig) -> Self {
        Self {
            client: Client::new(config),
        }
    }

    /// A given client (unit tests with `aws-smithy-mocks`).
    pub fn from_client(client: Client) -> Self {
        Self { client }
    }

    fn region(&self) -> String {
        self.client
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_default()
    }

    async fn read(
        &self,
        group: &str,
        name: &str,
    ) -> Result<Option<aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput>> {
        let out = self
            .client
            .get_schedule()
            .group_name(group)
            .name(name)
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk("GetSchedule", schedule_id(group, name), self.region(), e)
            });
        unless_not_found(out)
    }
}

fn schedule_id(group: &str, name: &str) -> String {
    format!("schedule {group}/{name}")
}

#[async_trait]
impl Schedules for AwsScheduler {
    async fn get(&self, group: &str, name: &str) -> Result<Option<BakeSchedule>> {
        let Some(out) = self.read(group, name).await? else {
            return Ok(None);
        };
        // The same reading of an input as the guard's of a bake's.
        let image_type = out
            .target()
            .and_then(|t| t.input())
            .and_then(crate::lifecycle::guard::scheduled_type);
        Ok(Some(BakeSchedule {
            group: group.to_owned(),
            name: name.to_owned(),
            image_type,
            enabled: out.state() == Some(&ScheduleState::Enabled),
            expression: out.schedule_expression().unwrap_or_default().to_owned(),
            last_modified: out
                .last_modification_date()
                .or(out.creation_date())
                .and_then(to_chrono)
                .unwrap_or_default(),
        }))
    }

    async fn names(&self, group: &str) -> Result<Vec<String>> {
        let mut pages = self
            .client
            .list_schedules()
            .group_name(group)
            .into_paginator()
            .send();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                AwsError::from_sdk(
                    "ListSchedules",
                    format!("schedule group {group}"),
                    self.region(),
                    e,
                )
            })?;
            names.extend(
                page.schedules()
                    .iter()
                    .filter_map(|s| s.name().map(str::to_owned)),
            );
        }
        names.sort();
        Ok(names)
    }

    async fn set_enabled(&self, group: &str, name: &str, enabled: bool) -> Result<()> {
        let id = schedule_id(group, name);
        let Some(out) = self.read(group, name).await? else {
            return Err(Error::InvalidInput(format!(
                "{id} does not exist in {}; is the type in the stack's Types parameter?",
                self.region()
            )));
        };
        let state = if enabled {
            ScheduleState::Enabled
        } else {
            ScheduleState::Disabled
        };
        // UpdateSchedule replaces the schedule: every field it had is given back, only the state changes.
        self.client
            .update_schedule()
            .group_name(group)
            .name(name)
            .set_schedule_expression(out.schedule_expression().map(str::to_owned))
            .set_schedule_expression_timezone(out.schedule_expression_timezone().map(str::to_owned))
            .set_description(out.description().map(str::to_owned))
            .set_start_date(out.start_date().cloned())
            .set_end_date(out.end_date().cloned())
            .set_flexible_time_window(out.flexible_time_window().cloned())
            .set_target(out.target().cloned())
            .set_kms_key_arn(out.kms_key_arn().map(str::to_owned))
            .set_action_after_completion(out.action_after_completion().cloned())
            .state(state)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("UpdateSchedule", id, self.region(), e))?;
        Ok(())
    }
}
