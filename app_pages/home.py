"""The home page: every model in a few lines, a sample grid of its best pretrained run and a link to its page, and
which datasets this server has."""

import streamlit as st

from dashboard import home_gallery, state

st.title("Deep generative models you can watch learn")
st.markdown(
    "Each page trains one model on handwritten digits **in the background on this server**: start a run, then "
    "watch its loss curves and samples update live, pause or stop it, and explore what it has learned. Runs "
    "belong to the server, not to your browser tab: a reload, another page or another student's browser sees "
    "the same jobs (left, in the sidebar)."
)

MODELS = {  # page, one line on what its grid shows, the longer story
    "rbm": ("app_pages/rbm.py", "RBM: an energy model of pixels and binary features, sampled by Gibbs chains.",
            "An **energy-based model**: low energy $E(v,h)$ means a likely image $v$ with hidden features $h$. "
            "Trained by **contrastive divergence**: push the energy of data down and of short Gibbs-chain samples "
            "up. It samples by running the Gibbs chain $v \\to h \\to v$ for many steps."),
    "vae": ("app_pages/vae.py", "VAE: a decoder that turns a small Gaussian code into an image.",
            "An encoder maps an image to a code $z$, a decoder maps $z$ back. Training maximises the **ELBO**: "
            "reconstruction minus the KL divergence of the codes from $\\mathcal{N}(0, I)$. It samples by decoding "
            "$z \\sim \\mathcal{N}(0, I)$, and its latent space can be walked with sliders."),
    "gan": ("app_pages/gan.py", "GAN: a generator trained to fool a discriminator, one pass from noise.",
            "A **game** between a generator $G$ (noise to image) and a discriminator $D$ (real or fake?). "
            "$G$ wins when $D$ can only guess, $D \\to 1/2$. It samples with one pass of $G$ on fresh noise; "
            "there is no likelihood, so watch the samples and $D$'s outputs."),
    "ebm": ("app_pages/ebm.py", "EBM: a network's energy over images, sampled by Langevin dynamics.",
            "A convolutional network gives each image an **energy** $E_\\theta(x)$; training lowers it on data and "
            "raises it on the model's own samples. It samples by **Langevin dynamics**: noisy gradient steps "
            "downhill in energy, started from noise or a replay buffer."),
}
best = home_gallery.best_runs(list(MODELS))
for col, (name, (page, line, story)) in zip(st.columns(len(MODELS)), MODELS.items()):
    with col:
        st.subheader(name.upper())
        run = best[name]
        shown = home_gallery.gallery_image(run) if run is not None else None
        if shown is not None:
            st.image(shown[0], caption=f"{line} Samples of {run.id} ({shown[1]}).", width=home_gallery.GALLERY_WIDTH)
        else:
            st.caption(f"{line} " + ("No pretrained run on this server yet: train one on its page." if run is None
                                     else f"{run.id} has no saved sample grid: its page samples it."))
        st.markdown(story)
        st.page_link(page, label=f"Train {'an' if name in ('rbm', 'ebm') else 'a'} {name.upper()}",
                     icon=":material/arrow_forward:")

st.subheader("Data on this server")
from genlib.data import DATASETS, OFFLINE_DATASET, dataset_available, default_data_root  # noqa: E402

root = default_data_root().resolve()
for name, spec in DATASETS.items():
    ok = spec.offline or dataset_available(name)
    mark = ":material/check_circle:" if ok else ":material/cancel:"
    where = "simulated on this server, on the RBM page" if spec.parametric else \
        "bundled with scikit-learn" if spec.offline else (f"found under {root}" if ok else f"not found under {root}")
    st.markdown(f"{mark} **{spec.title}**: {spec.description} ({where}).")
if not dataset_available("mnist"):
    if state.download_possible():
        st.warning(
            f"MNIST is not on this server yet (looked in {root}). The server can reach the download mirror: run "
            "`python -m genlib train vae --dataset mnist --max-steps 1` once (or copy torchvision's MNIST/raw files "
            f"there) and MNIST appears in the training forms. Until then the offline '{OFFLINE_DATASET}' dataset "
            "is used."
        )
    else:
        st.warning(
            f"MNIST is not on this server (looked in {root}) and cannot be downloaded from here (no network). "
            f"The pages train on the offline '{OFFLINE_DATASET}' dataset instead: scikit-learn's 1,797 handwritten "
            "digits (8x8 pixels, scaled into MNIST's 28x28 frame). To use MNIST, copy torchvision's MNIST/raw "
            "files into that folder, or start the app with GENLIB_DATA_ROOT pointing at a folder that has them."
        )
st.page_link("app_pages/runs.py", label="See and compare all runs", icon=":material/list:")
