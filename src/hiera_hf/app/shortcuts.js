() => {
  if (window.hierahfKeys) return;
  window.hierahfKeys = true;
  // key -> the id (after "image-" / "video-") of the button to press, or [radio id, choice]
  const KEYS = { f: ["mode", "foreground"], b: ["mode", "background"], n: "new", z: "undo", c: "clear", t: "track",
                 s: "stop", p: "play", k: "pause" };
  const shown = (id) => Array.from(document.querySelectorAll(`#image-${id}, #video-${id}`))
    .find((element) => element.offsetParent !== null);
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const typing = "input:not([type=radio]):not([type=checkbox]):not([type=button]), textarea, select,"
      + " [contenteditable]";
    if (event.target instanceof Element && event.target.closest(typing)) return;
    const action = KEYS[event.key.toLowerCase()];
    if (!action) return;
    const group = shown(Array.isArray(action) ? action[0] : action);
    const target = Array.isArray(action) && group
      ? Array.from(group.querySelectorAll("label")).find((label) => label.textContent.trim() === action[1])
      : group;
    if (!target) return;
    event.preventDefault();
    target.click();
  });
}
