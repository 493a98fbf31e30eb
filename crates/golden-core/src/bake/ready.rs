//! builder-ready: is the builder running with its SSM agent online?

use super::{BuilderRef, Services};
use crate::error::{Error, Result};

pub async fn handle(services: &Services, mut builder: BuilderRef) -> Result<BuilderRef> {
    builder.check(&services.config, "")?;
    let what = format!(
        "builder {} in {} to be running with its SSM agent online",
        builder.instance_id, builder.region
    );
    let instance = services
        .ec2
        .describe_instance(&builder.region, &builder.instance_id)
        .await?;
    let Some(instance) = instance else {
        // EC2 is eventually consistent: a just-launched instance may not be visible yet.
        if builder.poll.attempts < super::UNSEEN_CHECKS {
            builder.poll.tick(&what, services.now())?;
            return Ok(builder);
        }
        return Err(failed(&builder, "no longer exists"));
    };
    builder.state = instance.state.clone();
    match instance.state.as_str() {
        "pending" => builder.poll.tick(&what, services.now())?,
        "running" => match services
            .ssm
            .agent_status(&builder.region, &builder.instance_id)
            .await?
            .as_deref()
        {
            Some("Online") => builder.ready = true,
            // Not registered yet, or ConnectionLost while it boots: keep waiting, within the bound.
            _ => builder.poll.tick(&what, services.now())?,
        },
        other => {
            return Err(failed(
                &builder,
                &format!("is {other} before it was provisioned; see its console output"),
            ))
        }
    }
    Ok(builder)
}

fn failed(builder: &BuilderRef, reason: &str) -> Error {
    Error::BuilderFailed {
        instance_id: builder.instance_id.clone(),
        region: builder.region.clone(),
        reason: reason.to_owned(),
    }
}
