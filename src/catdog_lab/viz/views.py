"""The figures of the visualize stage, one function per view."""
from __future__ import annotations

import torch

from catdog_lab import BOOK_CLASSES
from catdog_lab.models.outputs import probabilities
from catdog_lab.plots import plt
from catdog_lab.viz.attributions import gradcam, integrated_gradients, occlusion, on_net_device, saliency
from catdog_lab.viz.figures import FigureIndex, image_grid, normalise, overlay, to_image
from catdog_lab.viz.sanity import randomisation_check, randomised_copy


@torch.inference_mode()
def predict_probabilities(net, images: torch.Tensor, batch_size: int = 50) -> torch.Tensor:
    """N x C class probabilities, on the CPU (computed on the net's device)."""
    return torch.cat([probabilities(net(on_net_device(net, images[i:i + batch_size])[0])).cpu()
                      for i in range(0, len(images), batch_size)])


def predicted(probs: torch.Tensor) -> torch.Tensor:
    """The top class per image (two classes: p(second) > 0.5, the book's threshold; a tie is the first)."""
    return probs.argmax(dim=1)


def select_images(labels: torch.Tensor, probs: torch.Tensor, per_class: int) -> list[int]:
    """Per class: `per_class` correct predictions and up to `per_class` wrong ones (test-split order)."""
    guesses = predicted(probs)
    chosen = []
    for label in range(probs.shape[1]):
        for correct in (True, False):
            hits = ((labels == label) & ((guesses == labels) == correct)).nonzero().flatten().tolist()
            chosen += hits[:per_class]
    return chosen


def _title(label: int, probs: torch.Tensor, classes) -> str:
    guess = int(probs.argmax())
    return (f"true {classes[label]}, says {classes[guess]} (p={float(probs[guess]):.2f})"
            + ("" if guess == label else " ✗"))


def plot_gradcam(net, layer, layer_name: str, stage: str, images, labels, probs, alpha: float,
                 index: FigureIndex, classes=BOOK_CLASSES) -> None:
    """Per image: the photo, Grad-CAM for the predicted class, and Grad-CAM for the true class when the
    prediction is wrong, else for the runner-up class (with two classes: the other one, as the book's
    cat-and-dog pair of maps)."""
    guesses = predicted(probs)
    runner_up = probs.argsort(dim=1, descending=True)[:, 1]
    second = torch.where(guesses == labels, runner_up, labels)
    cams = {"first": gradcam(net, layer, images, guesses), "second": gradcam(net, layer, images, second)}
    fig, axes = plt.subplots(len(images), 3, figsize=(9, 3 * len(images)), squeeze=False)
    for i in range(len(images)):
        axes[i, 0].imshow(to_image(images[i]))
        axes[i, 0].set_title(_title(int(labels[i]), probs[i], classes), fontsize=8)
        axes[i, 1].imshow(overlay(images[i], cams["first"][i], alpha))
        axes[i, 1].set_title(f"Grad-CAM for {classes[int(guesses[i])]} (predicted)", fontsize=8)
        axes[i, 2].imshow(overlay(images[i], cams["second"][i], alpha))
        kind = "runner-up" if int(guesses[i]) == int(labels[i]) else "true class"
        axes[i, 2].set_title(f"Grad-CAM for {classes[int(second[i])]} ({kind})", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"Grad-CAM of {stage} at {layer_name}", fontsize=10)
    index.save(fig, f"gradcam_{stage}_{layer_name}.png", f"Grad-CAM of {stage} at {layer_name}",
               "Test images of every class, correct and wrong predictions; heatmaps for the predicted class and "
               "for the true class (wrong predictions) or the runner-up (right ones), blended over the photo "
               f"(alpha {alpha}); Captum LayerGradCam with ReLU, upsampled.")


def plot_attributions(net, layer, stage: str, images, labels, probs, ig_steps: int, window: int, stride: int,
                      index: FigureIndex, classes=BOOK_CLASSES) -> None:
    target = predicted(probs)                       # explain what the model decided
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
        axes[i, 0].set_title(_title(int(labels[i]), probs[i], classes), fontsize=8)
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
    target = predicted(predict_probabilities(net, images))
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


def plot_gallery(net, layer, stage: str, images, labels, probs, files, alpha: float, max_images: int,
                 index: FigureIndex, classes=BOOK_CLASSES) -> int:
    """The misclassified test images, grouped by true class (a block of rows per class, up to `max_images`
    each), with the Grad-CAM of the class the model predicted."""
    guesses = predicted(probs)
    cols = 4
    blocks = []                                   # (class, its wrong images shown, how many it has wrong)
    for label, name in enumerate(classes):
        wrong = ((labels == label) & (guesses != labels)).nonzero().flatten().tolist()
        blocks.append((name, wrong[:max_images], len(wrong)))
    rows = sum(max(1, -(-len(shown) // cols)) for _, shown, _ in blocks)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    row = 0
    for name, shown, count in blocks:
        block_rows = max(1, -(-len(shown) // cols))
        cells = [axes[row + k // cols, k % cols] for k in range(block_rows * cols)]
        if shown:
            cams = gradcam(net, layer, images[shown], guesses[shown])
            for ax, i, cam in zip(cells, shown, cams):
                ax.imshow(overlay(images[i], cam, alpha))
                ax.set_title(f"{files[i]}\n{_title(int(labels[i]), probs[i], classes)}", fontsize=7)
        cells[0].text(-0.1, 0.5, f"true {name}:\n{count} wrong", transform=cells[0].transAxes, rotation=90,
                      ha="right", va="center", fontsize=9)
        row += block_rows
    total = sum(count for _, _, count in blocks)
    fig.suptitle(f"{stage}: {total} misclassified test images, by true class (up to {max_images} each), "
                 "Grad-CAM of the predicted class", fontsize=10)
    index.save(fig, f"misclassified_{stage}_gallery.png", f"Misclassified by {stage}",
               f"The test images {stage} gets wrong, by true class, with the predicted class's probability and "
               "Grad-CAM.")
    return total


def plot_filter_grid(patterns: torch.Tensor, title: str, file: str, caption: str, index: FigureIndex) -> None:
    grid = image_grid(patterns, per_row=8)
    fig = plt.figure(figsize=(8, 8 * grid.shape[0] / grid.shape[1] + 0.4))
    ax = fig.add_axes([0, 0, 1, 0.95])
    ax.imshow(grid)
    ax.axis("off")
    fig.suptitle(title, fontsize=10)
    index.save(fig, file, title, caption)


