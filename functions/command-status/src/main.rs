//! The `command-status` Lambda: the CommandStatus stage of the bake (docs/stages.md). Logic: golden_core::bake::command.

use golden_core::bake::command;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    golden_core::runtime::serve("CommandStatus", |services, input| async move {
        command::status(&services, input).await
    })
    .await
}
