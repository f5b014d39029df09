/**
 * Named image recipes: `agentbox image build NAME` with no flags builds NAME from its recipe. A
 * recipe is data: a Debian minbase (src/images/build-debian.ts) plus packages, plus files written
 * into the root afterwards (through insideRootfs, like every write into an image root).
 */
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { insideRootfs } from './rootfs.js';
import { DESKTOP_SCRIPT, DESKTOP_SCRIPT_PATH, DESKTOP_START_HTML, DESKTOP_START_PAGE } from './desktop-session.js';

export interface RecipeFile {
  /** Absolute path inside the image. */
  path: string;
  mode: number;
  content: string;
}

export interface ImageRecipe {
  base: 'debian';
  packages: readonly string[];
  files: readonly RecipeFile[];
  /** One line for `agentbox image build --help`. */
  description: string;
}

export const RECIPES: Readonly<Record<string, ImageRecipe>> = Object.freeze({
  /**
   * A desktop for computer use (ARCHITECTURE.md, "Desktops"). tigervnc-standalone-server's Xvnc is
   * the X server and the VNC server in one process (no Xvfb + x11vnc pair); openbox is a window
   * manager of a few MB that maximizes Chromium; dbus-x11 is left out: Chromium only logs that
   * there is no session bus. procps for pkill/ps, xterm for a terminal on the desktop.
   */
  desktop: {
    base: 'debian',
    packages: ['tigervnc-standalone-server', 'openbox', 'chromium', 'fonts-dejavu-core', 'xterm', 'procps', 'x11-utils'],
    files: [
      { path: DESKTOP_SCRIPT_PATH, mode: 0o755, content: DESKTOP_SCRIPT },
      { path: DESKTOP_START_PAGE, mode: 0o644, content: DESKTOP_START_HTML },
    ],
    description: 'desktop: Xvnc (VNC on 127.0.0.1:5900 inside), openbox, Chromium (DevTools on 9222)',
  },
});

export function recipeOf(name: string): ImageRecipe | undefined {
  return Object.hasOwn(RECIPES, name) ? RECIPES[name] : undefined;
}

/** `NAME@<sha256 of the recipe, 12 hex>`: what an image built from a recipe records, so a changed recipe can be told apart. */
export function recipeRef(name: string, recipe: ImageRecipe): string {
  const h = createHash('sha256').update(JSON.stringify({ base: recipe.base, packages: [...recipe.packages].sort(), files: recipe.files })).digest('hex');
  return `recipe:${name}@${h.slice(0, 12)}`;
}

/** Write a recipe's files into a built root, each parent directory created 0755, no symlink followed. */
export function writeRecipeFiles(rootfs: string, files: readonly RecipeFile[]): void {
  for (const f of files) {
    const rel = f.path.replace(/^\/+/, '');
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = insideRootfs(rootfs, parts.slice(0, i).join('/'));
      if (!existsSync(dir)) mkdirSync(dir, { mode: 0o755 });
    }
    const path = insideRootfs(rootfs, rel);
    writeFileSync(path, f.content, { mode: f.mode });
    chmodSync(path, f.mode);
  }
}
