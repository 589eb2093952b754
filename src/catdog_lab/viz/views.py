"""The figures of the visualize stage, one function per view."""
from __future__ import annotations

import torch

from catdog_lab import CLASSES
from catdog_lab.plots import plt
from catdog_lab.viz.attributions import CAT, DOG, gradcam, integrated_gradients, occlusion, on_net_device, saliency
from catdog_lab.viz.figures import FigureIndex, image_grid, normalise, overlay, to_image
from catdog_lab.viz.sanity import randomisation_check, randomised_copy


@torch.inference_mode()
def predict_dog_probability(net, images: torch.Tensor, batch_size: int = 50) -> torch.Tensor:
    """p(dog) per image, on the CPU (computed on the net's device)."""
    return torch.cat([torch.sigmoid(net(on_net_device(net, images[i:i + batch_size])[0])).cpu()
                      for i in range(0, len(images), batch_size)])


def select_images(labels: torch.Tensor, p_dog: torch.Tensor, per_class: int) -> list[int]:
    """Per class: `per_class` correct predictions and up to `per_class` wrong ones (test-split order)."""
    predicted = (p_dog > 0.5).long()
    chosen = []
    for label in (0, 1):
        for correct in (True, False):
            hits = ((labels == label) & ((predicted == labels) == correct)).nonzero().flatten().tolist()
            chosen += hits[:per_class]
    return chosen


def _title(label: int, p_dog: float) -> str:
    guess = CLASSES[int(p_dog > 0.5)]
    return f"true {CLASSES[label]}, says {guess} (p(dog)={p_dog:.2f})" + ("" if guess == CLASSES[label] else " ✗")


def plot_gradcam(net, layer, layer_name: str, stage: str, images, labels, p_dog, alpha: float,
                 index: FigureIndex) -> None:
    cams = {target: gradcam(net, layer, images, target) for target in (CAT, DOG)}
    fig, axes = plt.subplots(len(images), 3, figsize=(9, 3 * len(images)), squeeze=False)
    for i in range(len(images)):
        axes[i, 0].imshow(to_image(images[i]))
        axes[i, 0].set_title(_title(int(labels[i]), float(p_dog[i])), fontsize=8)
        for j, (target, name) in enumerate(((CAT, "cat"), (DOG, "dog")), start=1):
            axes[i, j].imshow(overlay(images[i], cams[target][i], alpha))
            axes[i, j].set_title(f"Grad-CAM for the {name} logit", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"Grad-CAM of {stage} at {layer_name} (cat logit = -dog logit)", fontsize=10)
    index.save(fig, f"gradcam_{stage}_{layer_name}.png", f"Grad-CAM of {stage} at {layer_name}",
               "Test images of both classes, correct and wrong predictions; heatmaps for the cat and the dog "
               f"logit blended over the photo (alpha {alpha}); Captum LayerGradCam with ReLU, upsampled.")


def plot_attributions(net, layer, stage: str, images, labels, p_dog, ig_steps: int, window: int, stride: int,
                      index: FigureIndex) -> None:
    target = (p_dog > 0.5).long()                   # explain what the model decided
    maps = {
        "Grad-CAM": gradcam(net, layer, images, target),
        "Saliency |∂logit/∂pixel|": saliency(net, images, target),
        f"Integrated Gradients ({ig_steps} steps)": integrated_gradients(net, images, target, ig_steps),
        f"Occlusion ({window}px grey patch)": occlusion(net, images, target, window, stride),
    }
    fig, axes = plt.subplots(len(images), 1 + len(maps), figsize=(3 * (1 + len(maps)), 3 * len(images)),
                             squeeze=False)
    for i in range(len(images)):
        axes[i, 0].imshow(to_image(images[i]))
        axes[i, 0].set_title(_title(int(labels[i]), float(p_dog[i])), fontsize=8)
        for j, (name, attribution) in enumerate(maps.items(), start=1):
            axes[i, j].imshow(normalise(attribution[i]).cpu().numpy(), cmap="inferno")
            axes[i, j].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"Which pixels matter to {stage} (for the predicted class)", fontsize=10)
    index.save(fig, f"attributions_{stage}_gradcam_saliency_ig_occlusion.png",
               f"Pixel attributions of {stage}", "Grad-CAM, Saliency, Integrated Gradients (black baseline) and "
               "Occlusion (grey patch) side by side, for the class the model predicted (Captum).")


def plot_sanity(net, layer, stage: str, images, index: FigureIndex, seed: int) -> dict:
    random_net = randomised_copy(net, seed)
    target = (predict_dog_probability(net, images) > 0.5).long()
    layer_random = _same_layer(net, random_net, layer)
    checks = {
        # |signed Grad-CAM|: the ReLU'd map of a random net is often all zero, and a sign flip (cat = -dog)
        # must not pass for a different map (Adebayo et al.'s "absolute value" rank correlation)
        "gradcam": randomisation_check(lambda model, batch: gradcam(model, layer if model is net else layer_random,
                                                                    batch, target, upsample=False, relu=False).abs(),
                                       net, random_net, images),
        "saliency": randomisation_check(lambda model, batch: saliency(model, batch, target), net, random_net, images),
    }
    fig, axes = plt.subplots(len(images), 5, figsize=(15, 3 * len(images)), squeeze=False)
    for i in range(len(images)):
        axes[i, 0].imshow(to_image(images[i]))
        for j, (name, chk) in enumerate(checks.items()):
            for k, which in enumerate(("trained", "random")):
                ax = axes[i, 1 + 2 * j + k]
                ax.imshow(normalise(chk[which][i]).cpu().numpy(), cmap="inferno")
                ax.set_title(f"{name}, {which} weights" + (f"\nρ={chk['per_image'][i]:.2f}" if k else ""), fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"Sanity check (model randomisation): mean Spearman ρ |Grad-CAM| (before ReLU) "
                 f"{checks['gradcam']['mean']:.2f}, saliency {checks['saliency']['mean']:.2f} "
                 f"(low = the map depends on the weights)", fontsize=10)
    index.save(fig, f"sanity_check_{stage}_randomised_weights.png", "Sanity check: randomised weights",
               "Maps of the trained model next to the same architecture with random weights (Adebayo et al. 2018); "
               "ρ is the rank correlation between the two. A trustworthy map changes a lot.")
    return {name: {"mean": chk["mean"], "constant_maps": chk["constant_maps"]} for name, chk in checks.items()}


def _same_layer(net, other, layer):
    name = next(name for name, module in net.named_modules() if module is layer)
    return dict(other.named_modules())[name]


def plot_gallery(net, layer, stage: str, images, labels, p_dog, files, alpha: float, max_images: int,
                 index: FigureIndex) -> int:
    wrong = ((p_dog > 0.5).long() != labels).nonzero().flatten().tolist()
    shown = wrong[:max_images]
    cols = 4
    rows = max(1, (len(shown) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if shown:
        wrong_images = images[shown]
        cams = gradcam(net, layer, wrong_images, (p_dog[shown] > 0.5).long())
        for ax, i, cam, image in zip(axes.flat, shown, cams, wrong_images):
            ax.imshow(overlay(image, cam, alpha))
            ax.set_title(f"{files[i]}\n{_title(int(labels[i]), float(p_dog[i]))}", fontsize=7)
    fig.suptitle(f"{stage}: {len(wrong)} misclassified test images ({len(shown)} shown), "
                 "Grad-CAM of the predicted class", fontsize=10)
    index.save(fig, f"misclassified_{stage}_gallery.png", f"Misclassified by {stage}",
               f"The test images {stage} gets wrong, with p(dog) and the Grad-CAM of the class it predicted.")
    return len(wrong)


def plot_filter_grid(patterns: torch.Tensor, title: str, file: str, caption: str, index: FigureIndex) -> None:
    grid = image_grid(patterns, per_row=8)
    fig = plt.figure(figsize=(8, 8 * grid.shape[0] / grid.shape[1] + 0.4))
    ax = fig.add_axes([0, 0, 1, 0.95])
    ax.imshow(grid)
    ax.axis("off")
    fig.suptitle(title, fontsize=10)
    index.save(fig, file, title, caption)


