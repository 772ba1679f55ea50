//! The kubelet credential provider: golden responses for a match, no match and a bad request,
//! in both apiVersions kubelet speaks (v1 and v1beta1).

use crate::support::{run_with_stdin, stderr, stdout, Env};

fn provide(env: &Env, request: &str) -> std::process::Output {
    run_with_stdin(
        env.pullsecret(&["kubelet-credential-provider"]),
        request.as_bytes(),
    )
}

fn request(image: &str) -> String {
    request_in("v1", image)
}

fn request_in(version: &str, image: &str) -> String {
    format!(
        r#"{{"apiVersion":"credentialprovider.kubelet.k8s.io/{version}","kind":"CredentialProviderRequest","image":"{image}"}}"#
    )
}

#[test]
fn kubelet_provider_golden_responses() {
    let env = Env::new();
    let mut login = env.pullsecret(&[
        "secret",
        "create",
        "docker-registry",
        "org",
        "--docker-server=reg.example.com/org",
        "--docker-username=org-bot",
        "--docker-password-stdin",
    ]);
    login.stdout(std::process::Stdio::null());
    assert!(run_with_stdin(login, b"org-pass").status.success());
    let hub = env.pullsecret(&[
        "login",
        "docker.io",
        "-u",
        "hubuser",
        "--password-stdin",
        "--no-verify",
    ]);
    assert!(run_with_stdin(hub, b"hub<pass>").status.success());

    let out = provide(&env, &request("reg.example.com/org/app:1.0"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "{\"kind\":\"CredentialProviderResponse\",\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"cacheKeyType\":\"Image\",\"cacheDuration\":\"5m0s\",\"auth\":{\"reg.example.com/org\":{\"username\":\"org-bot\",\"password\":\"org-pass\"}}}\n"
    );

    let out = provide(&env, &request("nginx:latest"));
    assert_eq!(
        stdout(&out),
        "{\"kind\":\"CredentialProviderResponse\",\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"cacheKeyType\":\"Registry\",\"cacheDuration\":\"5m0s\",\"auth\":{\"docker.io\":{\"username\":\"hubuser\",\"password\":\"hub\\u003cpass\\u003e\"}}}\n"
    );

    // A repository outside the namespaced key gets no credentials.
    let out = provide(&env, &request("reg.example.com/other/app:1.0"));
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        "{\"kind\":\"CredentialProviderResponse\",\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"cacheKeyType\":\"Image\",\"cacheDuration\":\"5m0s\",\"auth\":{}}\n"
    );

    // kubelets before 1.26 speak v1beta1: the same answers, in their apiVersion.
    let out = provide(&env, &request_in("v1beta1", "reg.example.com/org/app:1.0"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "{\"kind\":\"CredentialProviderResponse\",\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1beta1\",\"cacheKeyType\":\"Image\",\"cacheDuration\":\"5m0s\",\"auth\":{\"reg.example.com/org\":{\"username\":\"org-bot\",\"password\":\"org-pass\"}}}\n"
    );
    let out = provide(&env, &request_in("v1beta1", "nginx:latest"));
    assert_eq!(
        stdout(&out),
        "{\"kind\":\"CredentialProviderResponse\",\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1beta1\",\"cacheKeyType\":\"Registry\",\"cacheDuration\":\"5m0s\",\"auth\":{\"docker.io\":{\"username\":\"hubuser\",\"password\":\"hub\\u003cpass\\u003e\"}}}\n"
    );
    let out = provide(
        &env,
        &request_in("v1beta1", "reg.example.com/other/app:1.0"),
    );
    assert_eq!(
        stdout(&out),
        "{\"kind\":\"CredentialProviderResponse\",\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1beta1\",\"cacheKeyType\":\"Image\",\"cacheDuration\":\"5m0s\",\"auth\":{}}\n"
    );

    for bad in [
        "{",
        r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1alpha1","kind":"CredentialProviderRequest","image":"a"}"#,
        r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"Other","image":"a"}"#,
    ] {
        let out = provide(&env, bad);
        assert!(!out.status.success(), "{bad}");
        assert!(stdout(&out).is_empty());
        assert!(
            stderr(&out).contains("invalid CredentialProviderRequest"),
            "{}",
            stderr(&out)
        );
    }
}
