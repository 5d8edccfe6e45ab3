//! The pipeline a user starts from, the one definition `wharf init`, the API's
//! from-scratch route and the editor share: the seed's four default stages, that is the
//! Source (`source:`, left for the user to fill in) and the stages Build, Test and
//! Deploy, each with a first task to edit; valid and runnable as written; no timeout of
//! its own (the seed's default 0: until done, capped at 14 days).
//!
//! With seed 000's "auto-deploy" option ([`auto_deploy_yaml`]) the Deploy stage gives
//! way to the stages ContainerOps adds after the build: "Manual review" (an `approval`
//! task for the person creating it) and "Release" (a `deploy-yaml` task whose cluster
//! is a run parameter: each user picks their own cluster).

use wharf_core::model::DEFAULT_STAGES;
use wharf_core::names::{NameError, PipelineName};

/// Starter YAML for a pipeline called `name`.
pub fn starter_yaml(name: &str) -> Result<String, NameError> {
    let name = PipelineName::new(name)?;
    let mut out = format!(
        "name: {name}\n\
         description: A new pipeline; edit the tasks of each stage.\n\
         timeout: 0              # minutes; 0 = until done (capped at 14 days)\n\
         # The Source stage: the repository every run checks out (none: runs start in an empty directory).\n\
         # source:\n\
         #   repo: https://github.com/you/app.git\n\
         #   branch: main\n\
         variables:\n  GREETING: hello\nstages:\n"
    );
    for stage in DEFAULT_STAGES {
        let task = stage.to_ascii_lowercase();
        out.push_str(&format!(
            "  - name: {stage}\n    tasks:\n      - name: {task}\n        type: script\n        script: |\n          echo \"${{GREETING}} from {stage}, run ${{BUILD_ID}}\"\n"
        ));
    }
    Ok(out)
}

/// Starter YAML with seed 000's auto-deploy stages: Build and Test as in
/// [`starter_yaml`], then "Manual review" (`approver` approves) and "Release"
/// (`deploy.yaml` of the checkout applied to the cluster given as `CLUSTER`).
pub fn auto_deploy_yaml(name: &str, approver: &str) -> Result<String, NameError> {
    let plain = starter_yaml(name)?;
    let cut = plain.find("  - name: Deploy\n").unwrap_or(plain.len());
    let head = plain[..cut].replacen(
        "variables:\n",
        "parameters:\n  - name: CLUSTER\n    description: The registered cluster (wharf clusters add) to release to\n    default: my-cluster\nvariables:\n",
        1,
    );
    let approver = serde_json::to_string(approver).unwrap_or_else(|_| "\"admin\"".into());
    Ok(format!(
        "{head}  - name: Manual review\n    tasks:\n      - name: review\n        type: approval\n        approvers: [{approver}]\n        message: Release run ${{BUILD_ID}} to ${{CLUSTER}}?\n\
         \x20 - name: Release\n    tasks:\n      - name: release\n        type: deploy-yaml\n        file: deploy.yaml\n        cluster: ${{CLUSTER}}\n        namespace: default\n"
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_starter_validates_and_has_the_default_stages() {
        let yaml = super::starter_yaml("my-app").unwrap();
        let pipeline = crate::parse(&yaml).unwrap();
        let names: Vec<&str> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Build", "Test", "Deploy"]);
        assert!(yaml.contains("# source:"), "the Source is there to fill in:\n{yaml}");
        assert!(pipeline.timeout.is_none_or(|t| t.as_std().is_zero()), "the seed's default: until done");
        assert!(super::starter_yaml("../x").is_err());
    }

    #[test]
    fn auto_deploy_adds_manual_review_and_release_after_the_build() {
        let yaml = super::auto_deploy_yaml("my-app", "ann").unwrap();
        let pipeline = crate::parse(&yaml).unwrap_or_else(|d| panic!("{}\n{yaml}", d.render("starter", &yaml)));
        let names: Vec<&str> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Build", "Test", "Manual review", "Release"]);
        let types: Vec<&str> = pipeline.stages.iter().flat_map(|s| &s.tasks).map(|t| t.kind.type_name()).collect();
        assert_eq!(types, ["script", "script", "approval", "deploy-yaml"]);
        let wharf_core::model::TaskKind::Approval(review) = &pipeline.stages[2].tasks[0].kind else { panic!() };
        assert_eq!(review.approvers, ["ann"]);
        assert_eq!(pipeline.parameters[0].name.as_str(), "CLUSTER");
    }
}
