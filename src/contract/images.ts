/**
 * The wire contract's image shape (ARCHITECTURE.md, "Contracts"): what `POST /v1/images/pull` answers
 * (and its SSE `done` event), what the image store writes to `<name>/image.json` and lists.
 */
import { z } from 'zod';

export const IMAGE_SOURCES = ['busybox', 'debian', 'import', 'pull'] as const;
export type ImageSource = (typeof IMAGE_SOURCES)[number];

export const ImageInfoSchema = z.object({
  name: z.string().describe('image name, e.g. debian'),
  id: z.string().describe('sha256 fingerprint of the root tree as built (changes with every rebuild)'),
  createdAt: z.string().describe('ISO 8601 time the build finished'),
  source: z.enum(IMAGE_SOURCES).describe('what built it: busybox, debian (mmdebstrap), import (a tarball) or pull (a registry image)'),
  ref: z.string().optional().describe('for pulled images: the registry reference; for images built from a recipe: recipe:NAME@<hash of the recipe>'),
  packages: z.array(z.string()).describe('Debian packages asked for on top of minbase'),
  sizeBytes: z.number().describe('apparent size of the files in the root'),
});
export type ImageInfo = z.infer<typeof ImageInfoSchema>;
