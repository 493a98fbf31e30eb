//! Errors as people read them.

/// An error and its causes, `: `-joined (e.g. "failed to load IMDS session token: dispatch failure: io
/// error: ... Connection refused"), without the Debug dump of the raw request or response that the SDK's
/// `DisplayErrorContext` appends.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        // Some layers repeat their cause's message in their own; say it once.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}
