// headcap's avatar viewer: three.js (WebGPURenderer: WebGPU where the browser has it, else its
// WebGL2 backend), GLTFLoader and three.js's Gaussian splat renderer for KHR_gaussian_splatting
// primitives, bundled by esbuild into viewer.bundle.js (see headcap/viewer/__init__.py). The page
// embeds the .glb as base64 in <script id="avatar" type="application/octet-stream">, so it opens
// from file:// and fetches nothing.
import * as THREE from 'three/webgpu';
import { GLTFLoader } from 'three/examples/jsm/loaders/GLTFLoader.js';
import { GLTFGaussianSplatLoaderExtension } from 'three/examples/jsm/loaders/GLTFGaussianSplatLoaderExtension.js';
import { OrbitControls } from 'three/examples/jsm/controls/OrbitControls.js';

function decodeBase64(text) {
  const binary = atob(text.trim());
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes.buffer;
}

async function main() {
  const status = document.getElementById('status');
  const renderer = new THREE.WebGPURenderer({ antialias: true });
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  renderer.setSize(window.innerWidth, window.innerHeight);
  document.body.appendChild(renderer.domElement);
  await renderer.init();
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0x202124);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x444444, 2.0));
  const key = new THREE.DirectionalLight(0xffffff, 1.5);
  key.position.set(0.5, 1.0, 1.0);
  scene.add(key);

  const loader = new GLTFLoader();
  loader.register((parser) => new GLTFGaussianSplatLoaderExtension(parser));
  const gltf = await new Promise((resolve, reject) =>
    loader.parse(decodeBase64(document.getElementById('avatar').textContent), '', resolve, reject));
  scene.add(gltf.scene);
  let splats = 0;
  gltf.scene.traverse((obj) => { if (obj.isGaussianSplat) splats += 1; });
  // srgb_rec709_display splats hold display colours: write them out unconverted; meshes are linear PBR
  renderer.outputColorSpace = splats ? THREE.LinearSRGBColorSpace : THREE.SRGBColorSpace;
  const mixer = new THREE.AnimationMixer(gltf.scene);
  const clip = gltf.animations[0];
  if (clip) mixer.clipAction(clip).play();
  mixer.update(0);
  gltf.scene.updateMatrixWorld(true);
  // precise: the box of the skinned, morphed vertices at the clip's start (the head may sit anywhere in the world)
  const box = new THREE.Box3().setFromObject(gltf.scene, splats === 0);
  const centre = box.getCenter(new THREE.Vector3());
  const size = box.getSize(new THREE.Vector3()).length();
  const camera = new THREE.PerspectiveCamera(30, window.innerWidth / window.innerHeight, size / 100, size * 100);
  camera.position.copy(centre).add(new THREE.Vector3(0, 0, size * 1.6));  // glTF: the face looks along +Z
  const controls = new OrbitControls(camera, renderer.domElement);
  controls.target.copy(centre);
  controls.update();

  const state = { time: 0, clip: clip ? clip.name : null, duration: clip ? clip.duration : 0, frames: 0,
                  morphTargets: [], splatObjects: splats, backend: renderer.backend.isWebGPUBackend ? 'webgpu' : 'webgl2' };
  gltf.scene.traverse((obj) => {
    if (obj.morphTargetDictionary) state.morphTargets = Object.keys(obj.morphTargetDictionary);
  });
  status.textContent = (splats ? `${splats} splat set(s) (drawn static), ` : '')
    + (clip ? `${clip.name}: ${clip.duration.toFixed(2)} s, ${state.morphTargets.length} morph targets`
            : `${state.morphTargets.length} morph targets (no animation)`);
  let last = performance.now();
  window.addEventListener('resize', () => {
    camera.aspect = window.innerWidth / window.innerHeight;
    camera.updateProjectionMatrix();
    renderer.setSize(window.innerWidth, window.innerHeight);
  });
  renderer.setAnimationLoop(() => {
    const now = performance.now();
    const dt = (now - last) / 1000;
    last = now;
    mixer.update(dt);
    state.time += dt;
    state.frames += 1;
    renderer.render(scene, camera);
  });
  window.viewerState = state;
  window.viewerReady = true;
}

main().catch((err) => {
  document.getElementById('status').textContent = `error: ${err}`;
  console.error(err);
});
