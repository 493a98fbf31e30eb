//! What reaches the builder's shell through SSM Run Command.
//!
//! The recipe's commands and script are the recipe author's code and run as written. Everything else that
//! comes from data (environment values, paths) is quoted here, so a value can never become code.
//!
//! SSM joins a document's command list with newlines into one script file; an element may itself span
//! several lines (a heredoc), which is how the provision script is embedded.

use sha2::{Digest, Sha256};

use crate::recipe::{Platform, Recipe};

/// POSIX shell single-quoting: the result is one word whose value is exactly `s`, whatever it contains.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// PowerShell single-quoting. PowerShell also treats the typographic single quotes (U+2018..U+201B) as
/// quote characters, so those are doubled too; otherwise `‘` in a value would end the string.
pub fn ps_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The SSM document that runs commands on `platform`.
pub fn document_name(platform: Platform) -> &'static str {
    match platform {
        Platform::Linux => "AWS-RunShellScript",
        Platform::Windows => "AWS-RunPowerShellScript",
    }
}

/// The recipe's test commands, run as provision's are (same shell settings, same env); none without a test.
pub fn test_commands(recipe: &Recipe) -> Vec<String> {
    let Some(test) = &recipe.test else {
        return Vec::new();
    };
    let as_provision = Recipe {
        provision: crate::recipe::Provision {
            commands: test.commands.clone(),
            script: None,
            env: recipe.provision.env.clone(),
            timeout_minutes: test.timeout_minutes,
        },
        ..recipe.clone()
    };
    provision_commands(&as_provision)
}

/// The Provision step's commands: strict error handling, the recipe's environment (quoted), its commands,
/// then its script.
///
/// On Linux the script is written to a temporary file through a heredoc and executed, so a shebang line
/// (`#!/usr/bin/env python3`) is honoured; without one bash runs it. AWS-RunShellScript runs the joined
/// commands with `sh`, which is bash on Amazon Linux and RHEL-likes (`set -o pipefail` needs it).
pub fn provision_commands(recipe: &Recipe) -> Vec<String> {
    let p = &recipe.provision;
    let mut out = Vec::new();
    match recipe.platform {
        Platform::Linux => {
            out.push("set -euo pipefail".to_owned());
            for (key, value) in &p.env {
                out.push(if is_env_name(key) {
                    format!("export {key}={}", shell_quote(value))
                } else {
                    // Validation rejects such keys; fail loudly rather than splice a name into code.
                    format!(
                        "echo {} >&2; exit 1",
                        shell_quote(&format!(
                            "invalid environment variable name {key:?} in recipe"
                        ))
                    )
                });
            }
            out.extend(p.commands.iter().cloned());
            if let Some(script) = p.script.as_deref().filter(|s| !s.trim().is_empty()) {
                let delimiter = heredoc_delimiter(script);
                let body = script.strip_suffix('\n').unwrap_or(script);
                out.push(format!(
                    "golden_ami_script=\"$(mktemp)\"\ncat > \"$golden_ami_script\" <<'{delimiter}'\n{body}\n{delimiter}\n\
                     chmod 700 \"$golden_ami_script\"\n\"$golden_ami_script\"\nrm -f \"$golden_ami_script\""
                ));
            }
        }
        Platform::Windows => {
            out.push("$ErrorActionPreference = 'Stop'".to_owned());
            // The progress bar makes Invoke-WebRequest many times slower and nobody sees it.
            out.push("$ProgressPreference = 'SilentlyContinue'".to_owned());
            for (key, value) in &p.env {
                out.push(if is_env_name(key) {
                    format!("$env:{key} = {}", ps_quote(value))
                } else {
                    format!(
                        "[Console]::Error.WriteLine({}); exit 1",
                        ps_quote(&format!(
                            "invalid environment variable name {key:?} in recipe"
                        ))
                    )
                });
            }
            out.extend(p.commands.iter().cloned());
            if let Some(script) = p.script.as_deref().filter(|s| !s.trim().is_empty()) {
                out.push(script.to_owned());
            }
        }
    }
    out
}

fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_uppercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// A heredoc delimiter that is no line of `body`: derived from the body's hash (so it is stable for the
/// same script, which keeps SSM command text reproducible) and lengthened in the impossible case of a clash.
fn heredoc_delimiter(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let mut delimiter = format!("GOLDEN_AMI_EOF_{hex}");
    while body.lines().any(|l| l == delimiter) {
        delimiter.push('X');
    }
    delimiter
}

/// Built-in Linux removal targets. Globs are expanded by the shell in both the removal and the check.
const LINUX_TARGETS: &[&str] = &[
    // Puppet's identity: an instance launched from the image must not present the builder's certificate.
    "/etc/puppetlabs/puppet/ssl",
    "/var/lib/puppet",
    "/opt/puppetlabs/puppet/cache",
    // Host keys are regenerated at first boot; shared keys would let one instance impersonate another.
    "/etc/ssh/ssh_host_*",
    "/var/lib/dbus/machine-id",
    // cloud-init state and the builder's user data, so cloud-init runs afresh on every launch.
    "/var/lib/cloud/instances",
    "/var/lib/cloud/instance/user-data*",
    "/root/*.sh",
    "/root/*.log",
    "/root/userdata*",
    "/root/.bash_history",
    "/home/*/.bash_history",
];

/// The SSM agent keeps every earlier command's script (the provisioning env with it) under orchestration/,
/// and its parameters under state/completed/. Both go, except the directory of the command that is running
/// this script: the agent still writes that command's output there.
const SSM_AGENT_TARGETS: &[&str] = &[
    "/var/lib/amazon/ssm/*/document/orchestration/*",
    "/var/lib/amazon/ssm/*/document/state/completed/*",
];

/// Built-in Windows removal targets (literal paths).
const WINDOWS_TARGETS: &[&str] = &[
    r"C:\ProgramData\PuppetLabs\puppet\etc\ssl",
    r"C:\ProgramData\PuppetLabs\puppet\cache",
    // EC2Launch v2 state: without it, first-boot tasks (user data, passwords, host name) run again.
    r"C:\ProgramData\Amazon\EC2Launch\state",
];

/// Every path the Sanitize step removes and then verifies is gone: the built-in list, then the recipe's
/// extra paths as given.
pub fn sanitize_targets(platform: Platform, extra_paths: &[String]) -> Vec<String> {
    let builtin: &[&[&str]] = match platform {
        Platform::Linux => &[LINUX_TARGETS, SSM_AGENT_TARGETS],
        Platform::Windows => &[
            WINDOWS_TARGETS,
            WINDOWS_GLOB_TARGETS,
            WINDOWS_SSM_AGENT_TARGETS,
        ],
    };
    builtin
        .iter()
        .flat_map(|list| list.iter())
        .map(|s| (*s).to_owned())
        .chain(extra_paths.iter().cloned())
        .collect()
}

/// A built-in target as a shell word: quoted, except that `*` stays outside the quotes to glob.
fn glob_word(target: &str) -> String {
    target
        .split('*')
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join("*")
}

const HOSTNAME: &str = "localhost.localdomain";

/// The Sanitize step: make the builder a template (no puppet, no host identity, no history), then verify
/// it, failing the step with the path that is still there rather than publishing a half-clean image.
pub fn sanitize_commands(platform: Platform, extra_paths: &[String]) -> Vec<String> {
    match platform {
        Platform::Linux => linux_sanitize(extra_paths),
        Platform::Windows => windows_sanitize(extra_paths),
    }
}

fn linux_sanitize(extra_paths: &[String]) -> Vec<String> {
    let builtin: Vec<String> = LINUX_TARGETS.iter().map(|t| glob_word(t)).collect();
    let extra: Vec<String> = extra_paths.iter().map(|p| shell_quote(p)).collect();
    let words: Vec<&String> = builtin.iter().chain(extra.iter()).collect();

    let mut out = vec![
        "set -euo pipefail".to_owned(),
        // Puppet would re-run at boot, re-certify under a new name and change the image under the fleet.
        "if command -v systemctl >/dev/null 2>&1; then systemctl disable --now puppet.service 2>/dev/null || true; \
         systemctl mask puppet.service; fi"
            .to_owned(),
        "if command -v cloud-init >/dev/null 2>&1; then cloud-init clean --logs --seed; else rm -rf /var/lib/cloud/*; fi"
            .to_owned(),
    ];
    for word in &words {
        out.push(format!("rm -rf -- {word}"));
    }
    // `$0` is the script the agent runs, inside its own command's orchestration directory.
    out.push(
        "golden_ami_self=$(readlink -f -- \"$0\" 2>/dev/null || printf '%s' \"$0\")".to_owned(),
    );
    for target in SSM_AGENT_TARGETS {
        out.push(format!(
            "for p in {}; do case \"$golden_ami_self/\" in \"$p\"/*) ;; *) rm -rf -- \"$p\" ;; esac; done",
            glob_word(target)
        ));
    }
    out.extend([
        // An empty machine-id makes systemd generate a new one at first boot.
        ": > /etc/machine-id".to_owned(),
        // Rotated logs go; live ones are emptied (the journal is vacuumed, not truncated, to stay readable).
        "if command -v journalctl >/dev/null 2>&1; then journalctl --rotate || true; journalctl --vacuum-time=1s || true; fi"
            .to_owned(),
        "find /var/log -type f \\( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' -o -name '*-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]' \\) -delete"
            .to_owned(),
        "find /var/log -path /var/log/journal -prune -o -type f -exec truncate -s 0 {} +".to_owned(),
        "printf '%s\\n' '127.0.0.1   localhost localhost.localdomain localhost4 localhost4.localdomain4' \
         '::1         localhost localhost.localdomain localhost6 localhost6.localdomain6' > /etc/hosts"
            .to_owned(),
        format!("hostnamectl set-hostname {HOSTNAME} 2>/dev/null || true"),
        format!("printf '%s\\n' {HOSTNAME} > /etc/hostname"),
    ]);

    // Verify. Live logs are not checked for emptiness: the SSM agent keeps writing its own log while
    // this very command runs, so such a check could never pass reliably.
    out.extend([
        "golden_ami_failed=0".to_owned(),
        "golden_ami_fail() { echo \"sanitize verification failed: $1 still present\" >&2; golden_ami_failed=1; }"
            .to_owned(),
        "golden_ami_check_gone() { for p in \"$@\"; do if [ -e \"$p\" ] || [ -L \"$p\" ]; then golden_ami_fail \"$p\"; fi; done; }"
            .to_owned(),
    ]);
    for word in &words {
        out.push(format!("golden_ami_check_gone {word}"));
    }
    for target in SSM_AGENT_TARGETS {
        out.push(format!(
            "for p in {}; do case \"$golden_ami_self/\" in \"$p\"/*) ;; *) golden_ami_check_gone \"$p\" ;; esac; done",
            glob_word(target)
        ));
    }
    out.extend([
        "if [ -s /etc/machine-id ]; then golden_ami_fail '/etc/machine-id (content)'; fi".to_owned(),
        "if command -v systemctl >/dev/null 2>&1 && [ \"$(systemctl is-enabled puppet.service 2>/dev/null)\" != masked ]; \
         then golden_ami_fail 'puppet.service (not masked)'; fi"
            .to_owned(),
        "if [ -n \"$(find /var/log -type f \\( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \\) -print -quit)\" ]; \
         then golden_ami_fail '/var/log (rotated logs)'; fi"
            .to_owned(),
        "if grep -v -e localhost -e '^[[:space:]]*$' -e '^[[:space:]]*#' /etc/hosts >/dev/null; \
         then golden_ami_fail '/etc/hosts (non-localhost entries)'; fi"
            .to_owned(),
        format!(
            "if [ \"$(cat /etc/hostname 2>/dev/null)\" != {HOSTNAME} ]; then golden_ami_fail '/etc/hostname (not {HOSTNAME})'; fi"
        ),
        "if [ \"$golden_ami_failed\" -ne 0 ]; then exit 1; fi".to_owned(),
        "echo 'sanitize verified'".to_owned(),
    ]);
    out
}

/// Windows paths with wildcards: PowerShell history of every profile (SSM runs as SYSTEM, whose profile is
/// under System32).
const WINDOWS_GLOB_TARGETS: &[&str] = &[
    r"C:\Users\*\AppData\Roaming\Microsoft\Windows\PowerShell\PSReadLine\*",
    r"C:\Windows\System32\config\systemprofile\AppData\Roaming\Microsoft\Windows\PowerShell\PSReadLine\*",
];

/// The SSM agent's copies of earlier commands on Windows (as `SSM_AGENT_TARGETS` on Linux).
const WINDOWS_SSM_AGENT_TARGETS: &[&str] = &[
    r"C:\ProgramData\Amazon\SSM\InstanceData\*\document\orchestration\*",
    r"C:\ProgramData\Amazon\SSM\InstanceData\*\document\state\completed\*",
];

/// What the Windows Sanitize step prints last, once it has started sysprep: command-status then waits for
/// the builder to stop before the image is created.
pub const SYSPREP_STARTED: &str = "sysprep started: the builder shuts down once it is generalized";

fn windows_sanitize(extra_paths: &[String]) -> Vec<String> {
    let words: Vec<String> = WINDOWS_TARGETS
        .iter()
        .map(|t| ps_quote(t))
        .chain(extra_paths.iter().map(|p| ps_quote(p)))
        .collect();
    let globs: Vec<String> = WINDOWS_GLOB_TARGETS.iter().map(|t| ps_quote(t)).collect();
    let agent: Vec<String> = WINDOWS_SSM_AGENT_TARGETS
        .iter()
        .map(|t| ps_quote(t))
        .collect();

    let mut out = vec![
        "$ErrorActionPreference = 'Stop'".to_owned(),
        // Puppet would re-run at boot, re-certify under a new name and change the image under the fleet.
        "foreach ($name in 'puppet', 'pxp-agent') { if (Get-Service -Name $name -ErrorAction SilentlyContinue) { \
         Stop-Service -Name $name -Force; Set-Service -Name $name -StartupType Disabled } }"
            .to_owned(),
    ];
    for word in &words {
        out.push(format!(
            "if (Test-Path -LiteralPath {word}) {{ Remove-Item -LiteralPath {word} -Recurse -Force }}"
        ));
    }
    for word in &globs {
        out.push(format!(
            "Get-Item -Path {word} -Force -ErrorAction SilentlyContinue | Remove-Item -Recurse -Force"
        ));
    }
    // The running command's own directory holds this script and the agent's output files; it stays.
    out.push("$self = if ($PSCommandPath) { $PSCommandPath } else { '' }".to_owned());
    for word in &agent {
        out.push(format!(
            "Get-Item -Path {word} -Force -ErrorAction SilentlyContinue | \
             Where-Object {{ -not $self.StartsWith($_.FullName + '\\', [StringComparison]::OrdinalIgnoreCase) }} | Remove-Item -Recurse -Force"
        ));
    }
    out.extend([
        // Files in use by running services cannot be removed; Temp is best effort and not verified.
        r"Get-ChildItem -LiteralPath 'C:\Windows\Temp' -Force -ErrorAction SilentlyContinue | Remove-Item -Recurse -Force -ErrorAction SilentlyContinue"
            .to_owned(),
        // Only the stock comment stays: the builder's entries must not follow the image.
        "Set-Content -LiteralPath (Join-Path $env:SystemRoot 'System32\\drivers\\etc\\hosts') -Encoding ASCII \
         -Value '# localhost name resolution is handled within DNS itself.'"
            .to_owned(),
        // EC2Launch v2 forgets that it ran, so user data and first-boot tasks run on every launch.
        r"$ec2launch = Join-Path $env:ProgramFiles 'Amazon\EC2Launch\EC2Launch.exe'; if (Test-Path -LiteralPath $ec2launch) { & $ec2launch reset --clean }"
            .to_owned(),
        "foreach ($log in (wevtutil el)) { try { wevtutil cl \"$log\" } catch { } }".to_owned(),
        "$global:LASTEXITCODE = 0".to_owned(),
    ]);

    out.push("$failed = $false".to_owned());
    for word in &words {
        out.push(format!(
            "if (Test-Path -LiteralPath {word}) {{ [Console]::Error.WriteLine('sanitize verification failed: ' + {word} + ' still present'); $failed = $true }}"
        ));
    }
    for word in &globs {
        out.push(format!(
            "if (Test-Path -Path {word}) {{ [Console]::Error.WriteLine('sanitize verification failed: ' + {word} + ' still present'); $failed = $true }}"
        ));
    }
    for word in &agent {
        out.push(format!(
            "Get-Item -Path {word} -Force -ErrorAction SilentlyContinue | \
             Where-Object {{ -not $self.StartsWith($_.FullName + '\\', [StringComparison]::OrdinalIgnoreCase) }} | \
             ForEach-Object {{ [Console]::Error.WriteLine('sanitize verification failed: ' + $_.FullName + ' still present'); $failed = $true }}"
        ));
    }
    out.extend([
        "foreach ($name in 'puppet', 'pxp-agent') { $svc = Get-Service -Name $name -ErrorAction SilentlyContinue; \
         if ($svc -and $svc.StartType -ne 'Disabled') { [Console]::Error.WriteLine(\"sanitize verification failed: service $name still enabled\"); $failed = $true } }"
            .to_owned(),
        "if ((Get-Content -LiteralPath (Join-Path $env:SystemRoot 'System32\\drivers\\etc\\hosts') | \
         Where-Object { $_ -notmatch '^\\s*(#|$)' })) { [Console]::Error.WriteLine('sanitize verification failed: hosts file entries still present'); $failed = $true }"
            .to_owned(),
        "if ($failed) { exit 1 }".to_owned(),
        "Write-Output 'sanitize verified'".to_owned(),
    ]);
    // Last: generalize. Sysprep resets the computer name (a new one is drawn at first boot), the SID and the
    // hardware state, then shuts the builder down; it runs detached so this command can report first. The
    // tool is whichever the base image has: EC2Launch v2, EC2Launch v1, or EC2Config.
    out.extend([
        r"$v1 = Join-Path $env:ProgramData 'Amazon\EC2-Windows\Launch\Scripts\SysprepInstance.ps1'; $ec2config = Join-Path $env:ProgramFiles 'Amazon\Ec2ConfigService\Ec2Config.exe'"
            .to_owned(),
        "if (Test-Path -LiteralPath $ec2launch) { Start-Process -FilePath $ec2launch -ArgumentList 'sysprep', '--shutdown=true' } \
         elseif (Test-Path -LiteralPath $v1) { Start-Process -FilePath powershell.exe -ArgumentList '-NoProfile', '-ExecutionPolicy', 'Bypass', '-File', $v1 } \
         elseif (Test-Path -LiteralPath $ec2config) { Start-Process -FilePath $ec2config -ArgumentList '-sysprep' } \
         else { [Console]::Error.WriteLine('sanitize failed: no EC2Launch v2, EC2Launch v1 or EC2Config on the builder to run sysprep with'); exit 1 }"
            .to_owned(),
        format!("Write-Output '{SYSPREP_STARTED}'"),
    ]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn recipe(platform: Platform) -> Recipe {
        let text = match platform {
            Platform::Linux => include_str!("../../../infra/recipes/bld-linux64.toml"),
            Platform::Windows => include_str!("../../../infra/recipes/b-2008.toml"),
        };
        Recipe::from_toml_str(text, "test").unwrap()
    }

    /// Runs `script` through bash and returns its stdout.
    fn bash(args: &[&str], script: &str) -> (bool, String) {
        let mut child = Command::new("bash")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    const NASTY: &[&str] = &[
        "",
        "plain",
        "it's",
        "'",
        "''",
        "$(touch /tmp/pwned)",
        "`id`",
        "$HOME ${PATH}",
        "a; rm -rf / #",
        "\\'\\",
        "\"double\" \\n",
        "tab\there",
        "ünïcødé ‘curly’",
    ];

    #[test]
    fn shell_quote_round_trips_through_bash_unchanged() {
        for value in NASTY {
            let (ok, out) = bash(&[], &format!("printf '%s' {}", shell_quote(value)));
            assert!(ok, "{value:?}: {out}");
            assert_eq!(out, *value);
        }
    }

    #[test]
    fn ps_quote_doubles_every_single_quote_kind() {
        assert_eq!(ps_quote("it's"), "'it''s'");
        assert_eq!(ps_quote("$(x) `n"), "'$(x) `n'");
        assert_eq!(ps_quote("a\u{2019}b"), "'a\u{2019}\u{2019}b'");
        assert_eq!(ps_quote(""), "''");
    }

    #[test]
    fn document_names_match_the_platform() {
        assert_eq!(document_name(Platform::Linux), "AWS-RunShellScript");
        assert_eq!(document_name(Platform::Windows), "AWS-RunPowerShellScript");
    }

    #[test]
    fn linux_provision_exports_env_quoted_and_keeps_commands_in_order() {
        let mut r = recipe(Platform::Linux);
        r.provision.env.insert(
            "EVIL".into(),
            "x'; touch /tmp/pwned; echo '$(id)`id`".into(),
        );
        let cmds = provision_commands(&r);
        assert_eq!(cmds[0], "set -euo pipefail");
        assert!(cmds.contains(&"export PUPPET_SERVER='puppet.build.example.com'".to_owned()));
        assert!(cmds.contains(&format!(
            "export EVIL={}",
            shell_quote("x'; touch /tmp/pwned; echo '$(id)`id`")
        )));
        let first_command = cmds
            .iter()
            .position(|c| c == &r.provision.commands[0])
            .unwrap();
        assert!(cmds[..first_command]
            .iter()
            .all(|c| c.starts_with("set ") || c.starts_with("export ")));
        assert_eq!(&cmds[first_command..], &r.provision.commands[..]);
    }

    #[test]
    fn linux_env_values_reach_the_commands_verbatim() {
        // GIVEN env values that would run code if they were not quoted
        let mut r = recipe(Platform::Linux);
        r.provision.env.clear();
        for (i, value) in NASTY.iter().enumerate() {
            r.provision
                .env
                .insert(format!("V{i:02}"), (*value).to_owned());
        }
        r.provision.commands = (0..NASTY.len())
            .map(|i| format!("printf '%s\\0' \"$V{i:02}\""))
            .collect();
        // WHEN the provision commands run
        let (ok, out) = bash(&[], &provision_commands(&r).join("\n"));
        // THEN each command sees exactly the value
        assert!(ok, "{out}");
        let seen: Vec<&str> = out.split('\0').collect();
        assert_eq!(&seen[..NASTY.len()], NASTY);
        assert_eq!(seen[NASTY.len()..], [""], "nothing else printed");
    }

    #[test]
    fn linux_script_runs_from_a_heredoc_that_cannot_be_closed_early() {
        // GIVEN a script whose own lines include `EOF` and another script's delimiter
        let mut r = recipe(Platform::Linux);
        r.provision.env.clear();
        r.provision.env.insert("GREETING".into(), "hi".into());
        r.provision.commands.clear();
        let other = heredoc_delimiter("something else");
        r.provision.script = Some(format!(
            "cat <<'EOF'\n$not_expanded\n{other}\nEOF\necho \"$GREETING\" 'quoted' $((1+1))\n"
        ));
        // WHEN the provision commands run
        let (ok, out) = bash(&[], &provision_commands(&r).join("\n"));
        // THEN the script ran whole, with the exported environment
        assert!(ok, "{out}");
        assert_eq!(out, format!("$not_expanded\n{other}\nhi quoted 2\n"));
    }

    #[test]
    fn linux_script_with_a_shebang_runs_with_that_interpreter() {
        let mut r = recipe(Platform::Linux);
        r.provision.commands.clear();
        // `cat` as the interpreter prints the script file itself: proof that the shebang was honoured.
        let script = "#!/bin/cat\necho \"$PUPPET_SERVER\" would have run under a shell\n";
        r.provision.script = Some(script.into());
        let (ok, out) = bash(&[], &provision_commands(&r).join("\n"));
        assert!(ok, "{out}");
        assert_eq!(out, script);
    }

    #[test]
    fn linux_script_failure_fails_the_step() {
        let mut r = recipe(Platform::Linux);
        r.provision.commands.clear();
        r.provision.script = Some("exit 3".into());
        let (ok, _) = bash(&[], &provision_commands(&r).join("\n"));
        assert!(!ok);
    }

    #[test]
    fn heredoc_delimiter_is_stable_and_never_a_line_of_the_body() {
        let d = heredoc_delimiter("x");
        for body in [
            String::new(),
            "x".to_owned(),
            "GOLDEN_AMI_EOF_\n".to_owned(),
            format!("{d}\n{d}X\n"),
        ] {
            let delimiter = heredoc_delimiter(&body);
            assert!(!body.lines().any(|l| l == delimiter), "{body:?}");
            assert_eq!(delimiter, heredoc_delimiter(&body));
        }
    }

    #[test]
    fn provision_commands_pass_bash_syntax_check() {
        let mut r = recipe(Platform::Linux);
        r.provision.script = Some("echo hello\n".into());
        let (ok, out) = bash(&["-n"], &provision_commands(&r).join("\n"));
        assert!(ok, "{out}");
    }

    #[test]
    fn windows_provision_starts_with_error_preference_and_quotes_env() {
        let mut r = recipe(Platform::Windows);
        r.provision
            .env
            .insert("EVIL".into(), "a'; Remove-Item C:\\ -Recurse; '".into());
        r.provision.script = Some("Write-Output done".into());
        let cmds = provision_commands(&r);
        assert_eq!(cmds[0], "$ErrorActionPreference = 'Stop'");
        assert!(cmds.contains(&"$env:PUPPET_SERVER = 'puppet.build.example.com'".to_owned()));
        assert!(cmds.contains(&"$env:EVIL = 'a''; Remove-Item C:\\ -Recurse; '''".to_owned()));
        assert_eq!(cmds.last().unwrap(), "Write-Output done");
    }

    #[test]
    fn invalid_env_names_fail_instead_of_being_spliced() {
        let mut r = recipe(Platform::Linux);
        r.provision
            .env
            .insert("X=1; touch /tmp/pwned; Y".into(), "v".into());
        let cmds = provision_commands(&r);
        assert!(!cmds.iter().any(|c| c.starts_with("export X=1")));
        let (ok, out) = bash(&[], &cmds.join("\n"));
        assert!(
            !ok && out.contains("invalid environment variable name"),
            "{out}"
        );
    }

    fn split_verify(cmds: &[String], marker: &str) -> (String, String) {
        let at = cmds.iter().position(|c| c.starts_with(marker)).unwrap();
        (cmds[..at].join("\n"), cmds[at..].join("\n"))
    }

    /// What the Linux Sanitize step must remove, written out here rather than taken from the code under
    /// test, so a target dropped from the code fails this test.
    const EXPECTED_LINUX: &[&str] = &[
        "/etc/puppetlabs/puppet/ssl",
        "/var/lib/puppet",
        "/opt/puppetlabs/puppet/cache",
        "/etc/ssh/ssh_host_*",
        "/var/lib/dbus/machine-id",
        "/var/lib/cloud/instances",
        "/var/lib/cloud/instance/user-data*",
        "/root/*.sh",
        "/root/*.log",
        "/root/userdata*",
        "/root/.bash_history",
        "/home/*/.bash_history",
    ];
    /// Removed too, but for the running command's own directory.
    const EXPECTED_SSM_AGENT: &[&str] = &[
        "/var/lib/amazon/ssm/*/document/orchestration/*",
        "/var/lib/amazon/ssm/*/document/state/completed/*",
    ];

    /// The paths the lines starting with `prefix` name, as bash reads their words with globbing off.
    fn words_after(lines: &str, prefix: &str, suffix: &str) -> Vec<String> {
        let words: Vec<&str> = lines
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|w| w.strip_suffix(suffix).unwrap_or(w))
            .collect();
        let (ok, out) = bash(&["-f"], &format!("printf '%s\\n' {}", words.join(" ")));
        assert!(ok, "{out}");
        out.lines().map(str::to_owned).collect()
    }

    #[test]
    fn every_linux_target_is_removed_and_then_verified() {
        let extra = vec!["/opt/it's here".to_owned(), "/srv/$(reboot)".to_owned()];
        let cmds = sanitize_commands(Platform::Linux, &extra);
        let (remove, verify) = split_verify(&cmds, "golden_ami_failed=0");
        let mut expected: Vec<String> = EXPECTED_LINUX.iter().map(|t| (*t).to_owned()).collect();
        expected.extend(extra.iter().cloned());
        assert_eq!(words_after(&remove, "rm -rf -- ", ""), expected);
        assert_eq!(words_after(&verify, "golden_ami_check_gone ", ""), expected);
        assert_eq!(
            words_after(
                &remove,
                "for p in ",
                "; do case \"$golden_ami_self/\" in \"$p\"/*) ;; *) rm -rf -- \"$p\" ;; esac; done"
            ),
            EXPECTED_SSM_AGENT
        );
        assert_eq!(
            words_after(&verify, "for p in ", "; do case \"$golden_ami_self/\" in \"$p\"/*) ;; *) golden_ami_check_gone \"$p\" ;; esac; done"),
            EXPECTED_SSM_AGENT
        );
        for must in [
            "systemctl mask puppet.service",
            "cloud-init clean --logs --seed",
            ": > /etc/machine-id",
            "hostnamectl set-hostname localhost.localdomain",
            "> /etc/hosts",
            "journalctl --vacuum-time",
        ] {
            assert!(remove.contains(must), "{must} missing");
        }
        assert!(verify.contains("sanitize verification failed: $1 still present"));
        assert!(verify.contains("exit 1"));
    }

    #[test]
    fn ssm_agent_copies_go_but_the_running_command_keeps_its_own() {
        // GIVEN an agent tree with an earlier command (the provisioning env), its completed state, and the
        // running command's directory with the sanitize script inside
        let root = std::env::temp_dir().join(format!("golden-ami-ssm-{}", std::process::id()));
        let docs = root.join("i-0123/document");
        let old = docs.join("orchestration/cmd-provision/awsrunShellScript/0.awsrunShellScript");
        let running = docs.join("orchestration/cmd-sanitize/awsrunShellScript/0.awsrunShellScript");
        let state = docs.join("state/completed");
        for d in [&old, &running, &state] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(old.join("_script.sh"), "export PUPPET_TOKEN=secret").unwrap();
        std::fs::write(state.join("cmd-provision.i-0123"), "{}").unwrap();
        let root_str = root.to_str().unwrap();
        let cmds = sanitize_commands(Platform::Linux, &[]);
        let (_, verify) = split_verify(&cmds, "golden_ami_failed=0");
        let helpers: Vec<&str> = verify.lines().take(3).collect();
        let agent_lines: Vec<String> = cmds
            .iter()
            .filter(|c| c.starts_with("golden_ami_self=") || c.contains("/var/lib/amazon/ssm/"))
            .map(|c| c.replace("/var/lib/amazon/ssm", root_str))
            .collect();
        assert_eq!(agent_lines.len(), 5, "{agent_lines:?}");
        let script = running.join("_script.sh");
        std::fs::write(
            &script,
            format!(
                "{}\n{}\nexit $golden_ami_failed\n",
                helpers.join("\n"),
                agent_lines.join("\n")
            ),
        )
        .unwrap();
        // WHEN the agent runs it as a script
        let out = Command::new("bash").arg(&script).output().unwrap();
        // THEN the earlier command and its state are gone, the running command's directory stays, and the
        // check passes
        let left_old = docs.join("orchestration/cmd-provision").exists();
        let left_state = state.join("cmd-provision.i-0123").exists();
        let kept = script.exists();
        std::fs::remove_dir_all(&root).unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !left_old,
            "the provisioning command's directory is still there"
        );
        assert!(!left_state, "the completed state is still there");
        assert!(kept, "the running command's directory was removed");
    }

    #[test]
    fn linux_sanitize_passes_bash_syntax_check() {
        let cmds = sanitize_commands(Platform::Linux, &["/opt/x'y".to_owned()]);
        let (ok, out) = bash(&["-n"], &cmds.join("\n"));
        assert!(ok, "{out}");
    }

    #[test]
    fn linux_verify_block_reports_leftovers_and_fails() {
        // GIVEN only the verify helpers and a check on a file that exists
        let dir = std::env::temp_dir().join(format!("golden-ami-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let leftover = dir.join("it's left");
        std::fs::write(&leftover, "x").unwrap();
        let cmds = sanitize_commands(Platform::Linux, &[]);
        let (_, verify) = split_verify(&cmds, "golden_ami_failed=0");
        let helpers: Vec<&str> = verify.lines().take(3).collect();
        let script = format!(
            "{}\ngolden_ami_check_gone {} {}\nif [ \"$golden_ami_failed\" -ne 0 ]; then exit 1; fi",
            helpers.join("\n"),
            shell_quote(leftover.to_str().unwrap()),
            shell_quote(dir.join("gone").to_str().unwrap()),
        );
        // WHEN it runs THEN it names the leftover and exits 1
        let (ok, out) = bash(&[], &script);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!ok);
        assert_eq!(
            out,
            format!(
                "sanitize verification failed: {} still present\n",
                leftover.display()
            )
        );
    }

    #[test]
    fn extra_path_with_quote_cannot_break_out() {
        let evil = "/opt/x'; touch /tmp/pwned; echo '".to_owned();
        let cmds = sanitize_commands(Platform::Linux, std::slice::from_ref(&evil));
        let line = cmds
            .iter()
            .find(|c| c.starts_with("rm -rf -- '/opt/x"))
            .unwrap();
        // The word parses back to exactly the path: bash sees one argument.
        let (ok, out) = bash(&[], &line.replace("rm -rf --", "printf '%s\\n'"));
        assert!(ok);
        assert_eq!(out, format!("{evil}\n"));

        let win = sanitize_commands(
            Platform::Windows,
            &["C:\\a'; Remove-Item C:\\ -Recurse; '".to_owned()],
        );
        assert!(win
            .iter()
            .any(|c| c.contains("'C:\\a''; Remove-Item C:\\ -Recurse; '''")));
    }

    /// What the Windows Sanitize step must remove, written out (see `EXPECTED_LINUX`).
    const EXPECTED_WINDOWS_LITERAL: &[&str] = &[
        r"C:\ProgramData\PuppetLabs\puppet\etc\ssl",
        r"C:\ProgramData\PuppetLabs\puppet\cache",
        r"C:\ProgramData\Amazon\EC2Launch\state",
    ];
    const EXPECTED_WINDOWS_GLOBS: &[&str] = &[
        r"C:\Users\*\AppData\Roaming\Microsoft\Windows\PowerShell\PSReadLine\*",
        r"C:\Windows\System32\config\systemprofile\AppData\Roaming\Microsoft\Windows\PowerShell\PSReadLine\*",
    ];
    const EXPECTED_WINDOWS_SSM_AGENT: &[&str] = &[
        r"C:\ProgramData\Amazon\SSM\InstanceData\*\document\orchestration\*",
        r"C:\ProgramData\Amazon\SSM\InstanceData\*\document\state\completed\*",
    ];

    #[test]
    fn every_windows_target_is_removed_and_then_verified() {
        let extra = vec![r"C:\builds\it's".to_owned()];
        let cmds = sanitize_commands(Platform::Windows, &extra);
        assert_eq!(cmds[0], "$ErrorActionPreference = 'Stop'");
        let (remove, verify) = split_verify(&cmds, "$failed = $false");
        let literal = EXPECTED_WINDOWS_LITERAL
            .iter()
            .copied()
            .chain([r"C:\builds\it''s"]);
        for t in literal {
            assert!(
                remove.contains(&format!("Remove-Item -LiteralPath '{t}' -Recurse -Force")),
                "{t} not removed"
            );
            assert!(verify.contains(&format!("if (Test-Path -LiteralPath '{t}') {{ [Console]::Error.WriteLine('sanitize verification failed: ' + '{t}'")), "{t} not verified");
        }
        for t in EXPECTED_WINDOWS_GLOBS {
            assert!(
                remove.contains(&format!("Get-Item -Path '{t}' -Force -ErrorAction SilentlyContinue | Remove-Item -Recurse -Force")),
                "{t} not removed"
            );
            assert!(
                verify.contains(&format!("if (Test-Path -Path '{t}') {{")),
                "{t} not verified"
            );
        }
        for t in EXPECTED_WINDOWS_SSM_AGENT {
            let spare = "Where-Object { -not $self.StartsWith($_.FullName + '\\', [StringComparison]::OrdinalIgnoreCase) }";
            assert!(
                remove.contains(&format!("Get-Item -Path '{t}' -Force -ErrorAction SilentlyContinue | {spare} | Remove-Item -Recurse -Force")),
                "{t} not removed"
            );
            assert!(verify.contains(&format!("Get-Item -Path '{t}' -Force -ErrorAction SilentlyContinue | {spare} | ForEach-Object")), "{t} not verified");
        }
        for must in [
            "Set-Service -Name $name -StartupType Disabled",
            "wevtutil cl",
            r"C:\Windows\Temp",
            "EC2Launch.exe",
            // The hosts file keeps only the stock comment.
            r"Set-Content -LiteralPath (Join-Path $env:SystemRoot 'System32\drivers\etc\hosts') -Encoding ASCII -Value '# localhost name resolution is handled within DNS itself.'",
        ] {
            assert!(remove.contains(must), "{must} missing");
        }
        assert!(verify.contains("if ($failed) { exit 1 }"));
        assert!(verify.contains("hosts file entries still present"));
        // Sysprep (which also resets the computer name) runs last, after the verification, detached, with
        // whichever launch agent the base image has; none is a failure, not an ungeneralized image.
        let sysprep = verify
            .find("Start-Process -FilePath $ec2launch -ArgumentList 'sysprep', '--shutdown=true'")
            .expect("EC2Launch v2 sysprep --shutdown");
        assert!(verify.find("if ($failed) { exit 1 }").unwrap() < sysprep);
        for must in [
            r"'Amazon\EC2-Windows\Launch\Scripts\SysprepInstance.ps1'",
            "Start-Process -FilePath $ec2config -ArgumentList '-sysprep'",
            "else { [Console]::Error.WriteLine('sanitize failed: no EC2Launch v2, EC2Launch v1 or EC2Config on the builder to run sysprep with'); exit 1 }",
        ] {
            assert!(verify.contains(must), "{must} missing");
        }
        assert_eq!(
            cmds.last().unwrap(),
            "Write-Output 'sysprep started: the builder shuts down once it is generalized'"
        );
    }
}
