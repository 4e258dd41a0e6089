() => {
  if (window.hierahfDragBox) return;
  window.hierahfDragBox = true;
  const MIN_DRAG = 5;
  const style = document.createElement("style");
  // (the views' empty corner-button bar of Gradio is hidden too: it would take the clicks on the image's top corners)
  style.textContent = "#image-view img, #video-view img { touch-action: none; -webkit-user-drag: none; }"
    + " #image-view .icon-button-wrapper, #video-view .icon-button-wrapper { display: none; }"
    + " .hierahf-rubber { position: fixed; z-index: 1000; pointer-events: none;"
    + " border: 2px dashed #ffd400; background: rgba(255, 212, 0, 0.15); }";
  document.head.appendChild(style);
  let drag = null;
  let swallow = false;
  const viewOf = (target) => {
    const view = target instanceof Element ? target.closest("#image-view, #video-view") : null;
    const image = view && view.querySelector(".image-frame img");
    return image && image.complete && image.naturalWidth && image.contains(target) ? { view, image } : null;
  };
  const pixel = (image, event) => {
    const rect = image.getBoundingClientRect();
    const scale = Math.min(rect.width / image.naturalWidth, rect.height / image.naturalHeight, 1);
    const x = (event.clientX - rect.left - (rect.width - image.naturalWidth * scale) / 2) / scale;
    const y = (event.clientY - rect.top - (rect.height - image.naturalHeight * scale) / 2) / scale;
    const clamp = (v, size) => Math.min(Math.max(Math.round(v), 0), size - 1);
    return [clamp(x, image.naturalWidth), clamp(y, image.naturalHeight)];
  };
  const end = () => {
    if (drag && drag.rubber) drag.rubber.remove();
    drag = null;
  };
  window.addEventListener("pointerdown", (event) => {
    end();
    swallow = false;
    const found = event.button === 0 ? viewOf(event.target) : null;
    if (!found) return;
    event.preventDefault();
    drag = { ...found, x: event.clientX, y: event.clientY, start: pixel(found.image, event), rubber: null };
  }, true);
  window.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const width = Math.abs(event.clientX - drag.x), height = Math.abs(event.clientY - drag.y);
    if (!drag.rubber && Math.max(width, height) < MIN_DRAG) return;
    if (!drag.rubber) {
      drag.rubber = document.createElement("div");
      drag.rubber.className = "hierahf-rubber";
      document.body.appendChild(drag.rubber);
    }
    Object.assign(drag.rubber.style, {
      left: `${Math.min(event.clientX, drag.x)}px`, top: `${Math.min(event.clientY, drag.y)}px`,
      width: `${width}px`, height: `${height}px`,
    });
  }, true);
  window.addEventListener("pointerup", (event) => {
    if (!drag) return;
    const { view, image, start, rubber } = drag;
    end();
    if (!rubber) return;
    window.hierahfBox = [...start, ...pixel(image, event)].join(",");
    document.querySelector(`#${view.id.replace("-view", "-box")}`).click();
    swallow = true;  // the click the browser dispatches right after this release, in the same task
    setTimeout(() => { swallow = false; }, 0);
  }, true);
  window.addEventListener("pointercancel", end, true);
  window.addEventListener("click", (event) => {
    if (!swallow) return;
    swallow = false;
    event.stopImmediatePropagation();
    event.preventDefault();
  }, true);
}
